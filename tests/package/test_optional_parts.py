"""Optional parts stay optional: in a process where mmdet, mmpretrain, fvcore and ONNX
(or every OpenMMLab package) cannot be imported -- as in an environment without them --
everything else imports and runs, and using a missing part raises an error naming the pip
extra that installs it (setup.py's extras_require)."""
import os
import os.path as osp
import subprocess
import sys
import textwrap


from harness import ROOT  # noqa: E402
ADE_A10 = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")


def run_without(packages, script: str) -> str:
    """``script`` in a fresh process in which ``packages`` cannot be imported (a None entry
    in sys.modules: ``import`` raises ModuleNotFoundError, ``find_spec`` finds nothing)."""
    prelude = "import sys\n" + "".join(f"sys.modules[{p!r}] = None\n" for p in packages)
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), \
        result.stdout[-3000:] + result.stderr[-4000:]
    return result.stdout


def test_without_mmdet_mmpretrain_fvcore_onnx(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(f"""
_base_ = {ADE_A10!r}
model = dict(
    backbone=dict(embed_dims=32, num_layers=4, num_heads=2, cluster_after=2,
                  cluster_grid=(6, 7), drop_path_rate=0.0),
    decode_head=dict(in_channels=32, channels=32, num_heads=2, embed_dims=32, num_layers=1))
load_from = None
""")
    detector = tmp_path / "detector.py"
    detector.write_text("default_scope = 'mmdet'\nmodel = dict(type='MaskRCNN')\n")
    run_without(("mmdet", "mmpretrain", "fvcore", "onnx", "onnxruntime", "onnxscript"), f"""
        import importlib, pkgutil
        import numpy as np, torch
        import expedite_mm
        from expedite_mm.compat import missing_part

        def refused(extra, fn, *args, **kwargs):
            try:
                fn(*args, **kwargs)
            except ModuleNotFoundError as error:
                assert f"pip install 'expedite-mm[{{extra}}]'" in str(error), error
                return
            raise AssertionError(f"{{fn}} did not refuse")

        # every module that does not need a missing package imports
        needs = {{"expedite_mm.analysis.flops", "expedite_mm.utils.flops",
                  "expedite_mm.models.swin_mmdet", "expedite_mm.models.pvt",
                  "expedite_mm.models.pvtv2", "expedite_mm.models.swinv2", "expedite_mm.models.vit_sam",
                  "expedite_mm.models.vit_mmpretrain", "expedite_mm.models.deit3",
                  "expedite_mm.models.deit",
                  "expedite_mm.models.mmpretrain_compat"}}
        names = [m.name for m in pkgutil.walk_packages(expedite_mm.__path__, "expedite_mm.")]
        assert needs <= set(names), needs - set(names)
        for name in sorted(set(names) - needs):
            importlib.import_module(name)
        assert set(expedite_mm.register_all_modules()) == {{"mmseg"}}

        # a segmentor with the expedited ViT builds and predicts
        from mmseg.apis import inference_model, init_model
        model = init_model({str(config)!r}, device="cpu")
        result = inference_model(model, np.random.randint(0, 255, (96, 128, 3), np.uint8))
        assert tuple(result.pred_sem_seg.data.shape) == (1, 96, 128)
        from mmseg.registry import MODELS
        from mmseg.models.backbones import SwinTransformer
        swin = MODELS.build(dict(type="ExpeditedSwin", embed_dims=16, depths=(1, 1, 2, 1),
                                 num_heads=(1, 1, 2, 2), window_size=6, cluster_after=1,
                                 clustered_window_size=4))
        assert isinstance(swin, SwinTransformer) and type(swin).__name__ == "ExpeditedSwinSeg"

        # the missing parts name their extra
        refused("pretrain", MODELS.build, dict(type="ExpeditedSwinV2"))
        refused("pretrain", MODELS.build, dict(type="ExpeditedViTSAM"))
        refused("flops", importlib.import_module, "expedite_mm.analysis.flops")
        from expedite_mm.apis import deploy
        refused("deploy", deploy.export_module, torch.nn.Identity(), torch.ones(1, 3),
                {str(tmp_path / "x.onnx")!r})
        refused("deploy", deploy.onnxruntime_session, "x.onnx")
        from expedite_mm.apis.config import build_model, load_config
        refused("det", build_model, load_config({str(detector)!r}))
        print("ok")
    """)


def test_without_any_openmmlab_package(tmp_path):
    """The operators, the safe loader of plain state dicts and registration (a no-op) with
    neither mmengine, mmcv, mmseg, mmdet nor mmpretrain."""
    path = tmp_path / "weights.pth"
    run_without(("mmengine", "mmcv", "mmseg", "mmdet", "mmpretrain"), f"""
        import torch
        import expedite_mm
        from expedite_mm import registration
        from expedite_mm.ops import TokenClustering, TokenReconstruction
        from expedite_mm.apis.checkpoint import torch_load_checked
        assert not registration.waiting()           # nothing to wait for
        tokens = torch.randn(2, 12 * 10, 8)
        centres, state = TokenClustering((6, 5))(tokens, (12, 10))
        assert TokenReconstruction(k=4)(centres, state).shape == tokens.shape
        assert expedite_mm.register_all_modules() == {{}}
        torch.save({{"state_dict": {{"w": torch.ones(2)}}}}, {str(path)!r})
        assert torch.equal(torch_load_checked({str(path)!r})["state_dict"]["w"], torch.ones(2))
        print("ok")
    """)
