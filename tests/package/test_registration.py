"""What importing expedite-mm does: the operators alone import no OpenMMLab package and
change no process-wide state; registration covers every installed package, skips missing
ones, and happens for configs that name ``expedite_mm`` in ``custom_imports``."""
import subprocess
import sys
import textwrap


def run_python(script: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), \
        result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_registers_into_installed_packages():
    import expedite_mm
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import DATASETS, METRICS, MODELS, TRANSFORMS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    registered = expedite_mm.register_all_modules()
    assert set(registered) == {"mmseg", "mmdet", "mmpretrain"}
    assert "ExpeditedVisionTransformer" in registered["mmpretrain"]
    assert MMPRETRAIN_MODELS.get("ExpeditedVisionTransformer") is not None
    assert {"ExpeditedViT", "ExpeditedSwin", "ExpeditedSwinV2"} <= set(registered["mmseg"])
    assert {"ExpeditedSwin", "ExpeditedSwinV2"} <= set(registered["mmdet"])
    for name in registered["mmseg"]:
        assert any(name in registry.module_dict
                   for registry in (MODELS, DATASETS, TRANSFORMS, METRICS)), name
    for name in registered["mmdet"]:
        assert name in MMDET_MODELS.module_dict, name


def test_missing_packages_are_skipped():
    """With mmdet and mmpretrain reported as not installed, registration still works and
    registers only what mmseg provides."""
    run_python("""
        import importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = (
            lambda name, *args: None if name in ("mmdet", "mmpretrain") else real(name, *args))
        import expedite_mm
        registered = expedite_mm.register_all_modules()
        assert set(registered) == {"mmseg"}, registered
        assert "ExpeditedViT" in registered["mmseg"]
        assert "ExpeditedSwinV2" not in registered["mmseg"]
        print("ok")
    """)


def test_operators_import_no_openmmlab_package_and_leave_torch_alone():
    """``import expedite_mm.ops`` (and the package) load no mm package, register nothing,
    add nothing to torch's weights_only allow-list and install no warning filter."""
    run_python("""
        import sys, warnings
        import torch.serialization
        torch_allow_list = lambda: list(getattr(torch.serialization, "get_safe_globals",
                                                lambda: [])())   # torch >= 2.5
        filters, safe = list(warnings.filters), torch_allow_list()
        import expedite_mm.ops
        import expedite_mm
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("mmseg", "mmdet", "mmpretrain", "mmengine", "mmcv"))
        assert loaded == [], loaded
        assert torch_allow_list() == safe
        assert list(warnings.filters) == filters
        from expedite_mm.ops import TokenClustering
        print("ok")
    """)


def test_custom_imports_of_the_package_registers(tmp_path):
    """A config naming ``expedite_mm`` in ``custom_imports`` builds an expedited backbone,
    as with mmseg's own tools (mmengine reads the config and imports the package)."""
    config = tmp_path / "cfg.py"
    config.write_text("custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)\n")
    run_python(f"""
        from mmengine.config import Config
        from mmseg.registry import MODELS
        from mmengine.registry import init_default_scope
        Config.fromfile({str(config)!r})
        init_default_scope("mmseg")
        model = MODELS.build(dict(type="ExpeditedViT", img_size=(32, 32), embed_dims=16,
                                  num_layers=2, num_heads=2, cluster_after=1))
        assert type(model).__name__ == "ExpeditedViT"
        print("ok")
    """)
