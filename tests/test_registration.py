"""``import expedite_mm`` registers into every installed OpenMMLab package, skips the rest."""
import subprocess
import sys
import textwrap


def test_registers_into_installed_packages():
    import expedite_mm
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import DATASETS, METRICS, MODELS, TRANSFORMS
    assert set(expedite_mm.REGISTERED) == {"mmseg", "mmdet"}
    assert {"ExpeditedViT", "ExpeditedSwin", "ExpeditedSwinV2"} <= set(expedite_mm.REGISTERED["mmseg"])
    assert {"ExpeditedSwin", "ExpeditedSwinV2"} <= set(expedite_mm.REGISTERED["mmdet"])
    for name in expedite_mm.REGISTERED["mmseg"]:
        assert any(name in registry.module_dict
                   for registry in (MODELS, DATASETS, TRANSFORMS, METRICS)), name
    for name in expedite_mm.REGISTERED["mmdet"]:
        assert name in MMDET_MODELS.module_dict, name


def test_missing_packages_are_skipped():
    """With mmdet and mmpretrain reported as not installed, the import still works and
    registers only what mmseg provides."""
    script = textwrap.dedent("""
        import importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = (
            lambda name, *args: None if name in ("mmdet", "mmpretrain") else real(name, *args))
        import expedite_mm
        assert set(expedite_mm.REGISTERED) == {"mmseg"}, expedite_mm.REGISTERED
        assert "ExpeditedViT" in expedite_mm.REGISTERED["mmseg"]
        assert "ExpeditedSwinV2" not in expedite_mm.REGISTERED["mmseg"]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
