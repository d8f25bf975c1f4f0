import os
import sys

import pytest
import torch

# The shared helpers (tests/helpers/: the independent re-derivations naive*.py, the
# end-to-end harness, the lane markers, the golden cases) are imported as plain modules.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _restoring_default_scope():
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture(autouse=True)
def _isolated_default_scope():
    """Undo the mmengine default scope a test set (init_default_scope / build_model), so a
    later test building from mmdet's registry does not get mmseg's class, and vice versa."""
    yield from _restoring_default_scope()


@pytest.fixture(autouse=True, scope="module")
def _isolated_default_scope_per_module():
    """The same for module-scoped fixtures (they are set up outside any single test)."""
    yield from _restoring_default_scope()
