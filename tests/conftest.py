import os
import sys

import pytest
import torch

# The shared helpers (tests/helpers/: the independent re-derivations naive*.py, the
# end-to-end harness, the lane markers, the golden cases) are imported as plain modules.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))


def pytest_configure(config):
    """Under pytest-xdist (``make test``: two workers) each worker gets its share of the
    cores: torch's default (one thread per core in every worker) oversubscribes them. The
    numbers do not change (the golden outputs are recorded with two threads and compared
    bit for bit on one)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))


def pytest_collection_modifyitems(session, config, items):
    """Test files with ``slow`` tests (end-to-end runs, full-size FLOP counts) first, in
    their order, then the rest: xdist hands out whole files in this order, so the long ones
    start early and the two workers finish together instead of one waiting on the last."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


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
