"""Registration does not depend on the order of imports: every order a user or a tool
takes, in a fresh process each -- ``import expedite_mm`` (or only the operators, or one of
its model modules) before or after mmengine / mmseg / mmdet / mmpretrain, a config's ``custom_imports`` alone, mmseg's
``init_model``, mmdet's ``init_detector``, ``MODELS.build`` of each registry, and mmseg's
own ``tools/test.py`` -- finds the expedited modules."""
import concurrent.futures
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

from harness import ROOT  # noqa: E402
ADE_A10 = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")

SEGMENTER = f"""
_base_ = {ADE_A10!r}
model = dict(
    backbone=dict(embed_dims=32, num_layers=4, num_heads=2, cluster_after=2,
                  cluster_grid=(6, 7), drop_path_rate=0.0),
    decode_head=dict(in_channels=32, channels=32, num_heads=2, embed_dims=32, num_layers=1))
load_from = None
"""

DETECTOR = """
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='ExpeditedSwin', embed_dims=16, depths=(2, 2, 2, 2),
                  num_heads=(1, 2, 2, 4), window_size=4, out_indices=(0, 1, 2, 3),
                  cluster_after=1, clustered_window_size=2),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32),
                  mask_roi_extractor=dict(out_channels=32), mask_head=dict(in_channels=32)))
"""

INIT_MODEL = """
from mmseg.apis import init_model
model = init_model({segmenter!r}, device='cpu')
assert type(model).__name__ == 'ExpeditedEncoderDecoder', type(model)
assert type(model.backbone).__name__ == 'ExpeditedViT', type(model.backbone)
"""
INIT_DETECTOR = """
from mmdet.apis import init_detector
model = init_detector({detector!r}, device='cpu')
from mmdet.registry import MODELS
assert type(model.backbone) is MODELS.get('ExpeditedSwin'), type(model.backbone)
assert type(model.backbone).__name__ == 'ExpeditedSwinDet', type(model.backbone)
"""
BUILD_MMSEG = """
from mmseg.registry import MODELS
m = MODELS.build(dict(type='ExpeditedViT', img_size=(32, 32), embed_dims=16, num_layers=2,
                      num_heads=2, cluster_after=1))
assert type(m).__name__ == 'ExpeditedViT'
"""
BUILD_MMDET = """
from mmdet.registry import MODELS
for name in ('ExpeditedSwin', 'ExpeditedSwinV2', 'ExpeditedViTSAM'):
    assert MODELS.get(name) is not None, name
"""
BUILD_MMPRETRAIN = """
from mmpretrain.registry import MODELS
m = MODELS.build(dict(type='ExpeditedVisionTransformer', arch='b', img_size=32, patch_size=16,
                      cluster_after=1, cluster_grid=(1, 1)))
assert type(m).__name__ == 'ExpeditedVisionTransformer'
"""
ROOT_REGISTRY = """
from mmengine.registry import MODELS
m = MODELS.build(dict(type='mmseg.ExpeditedViT', img_size=(32, 32), embed_dims=16,
                      num_layers=2, num_heads=2, cluster_after=1))
assert type(m).__name__ == 'ExpeditedViT'
"""
CUSTOM_IMPORTS_ONLY = """
from mmengine.config import Config
from mmengine.registry import init_default_scope
cfg = Config.fromfile({segmenter!r})          # custom_imports=['expedite_mm'] imports us
init_default_scope('mmseg')
from mmseg.registry import MODELS
model = MODELS.build(cfg.model)
assert type(model).__name__ == 'ExpeditedEncoderDecoder'
"""

ORDERS = {
    "expedite_mm, then init_model": ("import expedite_mm", INIT_MODEL),
    "ops only, then init_model": ("import expedite_mm.ops", INIT_MODEL),
    "expedite_mm, then init_detector": ("import expedite_mm", INIT_DETECTOR),
    "ops only, then init_detector": ("import expedite_mm.ops", INIT_DETECTOR),
    "mmengine, expedite_mm, init_model": ("import mmengine; import expedite_mm", INIT_MODEL),
    "mmseg, then expedite_mm": ("import mmseg; import expedite_mm", BUILD_MMSEG),
    "expedite_mm, then mmseg": ("import expedite_mm; import mmseg", BUILD_MMSEG),
    "mmdet, then expedite_mm": ("import mmdet; import expedite_mm", BUILD_MMDET),
    "expedite_mm, then mmdet": ("import expedite_mm", BUILD_MMDET),
    "mmpretrain, then expedite_mm": ("import mmpretrain; import expedite_mm", BUILD_MMPRETRAIN),
    "expedite_mm, then mmpretrain": ("import expedite_mm", BUILD_MMPRETRAIN),
    "expedite_mm, then mmengine's root registry": ("import expedite_mm", ROOT_REGISTRY),
    "custom_imports alone": ("", CUSTOM_IMPORTS_ONLY),
    "ops, then custom_imports": ("import expedite_mm.ops", CUSTOM_IMPORTS_ONLY),
    # a model module first: it imports its stock package, whose import triggers
    # registration, which must wait until the model module itself is complete
    "a model module first (mmseg)": ("from expedite_mm.models.vit import ExpeditedViT",
                                     BUILD_MMSEG),
    "a model module first (mmdet)": ("from expedite_mm.models.swin_mmdet import "
                                     "ExpeditedSwinDet", BUILD_MMDET),
}


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_every_import_order_registers(tmp_path):
    segmenter, detector = tmp_path / "segmenter.py", tmp_path / "detector.py"
    segmenter.write_text(SEGMENTER)
    detector.write_text(DETECTOR)
    scripts = {name: textwrap.dedent(first) + "\n" + textwrap.dedent(then).format(
        segmenter=str(segmenter), detector=str(detector)) + "\nprint('ok')\n"
        for name, (first, then) in ORDERS.items()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(scripts, pool.map(_run, scripts.values())))
    failed = {name: (result.stdout + result.stderr)[-1500:] for name, result in results.items()
              if result.returncode != 0 or not result.stdout.strip().endswith("ok")}
    assert not failed, "\n\n".join(f"--- {name}\n{log}" for name, log in failed.items())
