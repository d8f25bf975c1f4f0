"""expedite_mm.compat on the stack it runs on: the torch feature flags agree with what
torch actually has, version errors name the versions, optional parts name their pip extra,
and the two private fields of mmengine we rely on (no public API exists) still behave as
we use them. Runs on both tested stacks (README, "Two tested stacks")."""
import importlib
import re

import pytest
import torch

from expedite_mm import compat


def test_version_parsing_and_flags_match_torch():
    assert compat._version("2.1.2+cu121") == (2, 1, 2)
    assert compat._version("2.13.0.dev20260101") == (2, 13, 0)
    assert compat._version("2.6") == (2, 6, 0)
    assert compat.TORCH_VERSION == compat._version(torch.__version__)
    # each flag against the API it stands for
    assert compat.SAFE_GLOBALS_API == hasattr(torch.serialization, "get_safe_globals") \
        or compat.TORCH_VERSION < (2, 6)
    assert compat.FULLGRAPH_COMPILE == hasattr(torch.compiler, "is_compiling")
    assert not compat.is_compiling() and not compat.is_exporting()


def test_tracing_predicates_inside_dynamo():
    """is_compiling() is True while dynamo traces the caller (constant-folded in one graph
    from torch 2.3; on torch 2.1 dynamo breaks the graph there and the check runs eagerly,
    so the operators take their eager path: test_deploy.py checks those numbers)."""
    seen = []

    def probe(x):
        seen.append(compat.is_compiling())
        return x + 1

    torch._dynamo.reset()
    torch.compile(probe, backend="eager")(torch.ones(2))
    assert seen == [compat.FULLGRAPH_COMPILE]


def test_require_torch_names_the_versions():
    compat.require_torch("2.1", "something old")          # satisfied on both stacks
    with pytest.raises(RuntimeError, match=rf"frobnication needs torch >= 99\.0; this is torch "
                                           rf"{re.escape(torch.__version__)}"):
        compat.require_torch("99.0", "frobnication")


def test_missing_optional_package_names_the_pip_extra(monkeypatch):
    import sys
    for name in ("fvcore", "fvcore.nn"):                     # as if not installed
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModuleNotFoundError, match=r"FLOP counting needs fvcore, which is not "
                                                  r"installed: pip install 'expedite-mm\[flops\]'"):
        compat.import_optional("fvcore.nn", "flops", "FLOP counting")
    # a package that is there but fails inside is not reported as missing
    with pytest.raises(ModuleNotFoundError, match="expedite_mm.no_such_module"):
        compat.import_optional("expedite_mm.no_such_module", "x", "y")


# --------------------------------------------------------------------------- private fields
def test_checkpoint_schemes_is_mmengines_live_table():
    from mmengine.runner.checkpoint import CheckpointLoader, load_from_http, load_from_local
    schemes = compat.checkpoint_schemes()
    assert schemes[""] is load_from_local and schemes["https://"] is load_from_http
    marker = lambda filename, map_location=None: "loaded"   # noqa: E731
    CheckpointLoader.register_scheme("compat-test://", marker)
    try:
        assert compat.checkpoint_schemes()["compat-test://"] is marker
        assert CheckpointLoader.load_checkpoint("compat-test://x") == "loaded"
    finally:
        compat.checkpoint_schemes().pop("compat-test://")   # (register_scheme re-sorts it
        # into a new dict: always read it through checkpoint_schemes())
    assert "compat-test://" not in compat.checkpoint_schemes()


def test_mark_registry_imported_stops_location_imports():
    from mmengine.registry import Registry
    registry = Registry("compat_test", locations=["expedite_mm.no_such_module"])
    with pytest.raises(ModuleNotFoundError):
        registry.get("Anything")                              # tries its location
    registry.register_module(name="Here", module=dict)
    compat.mark_registry_imported(registry)
    assert registry.get("Here") is dict                      # served, location not imported
    assert registry.get("Missing") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("expedite_mm.no_such_module")


def test_add_config_package_writes_mmengines_live_table():
    """The table behind ``'<package>::<path>'`` bases (tests/package/test_wheel.py inherits
    a shipped config through it from an installed wheel)."""
    from mmengine.config import utils as config_utils
    compat.add_config_package("expedite_mm", "expedite-mm")
    assert config_utils.MODULE2PACKAGE["expedite_mm"] == "expedite-mm"
