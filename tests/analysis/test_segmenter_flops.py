"""The ViT-B Segmenter config reproduces the paper's GFLOPs reduction (Table 5).

The paper gives 124.7 -> 91.9 GFLOPs for Segmenter ViT-B/16 at 512x512 but no alpha or
cluster grid; the config picks the pair whose whole-model fvcore ratio matches with the
release's placement (head on the centres, logits reconstructed; the candidate table is in
the config's header). Counters differ in convention, so the ratio is compared, measured
side by side against the stock mmseg model.
"""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedViT
from expedite_mm.analysis.flops import count_flops

from harness import ROOT  # noqa: E402
VIT_B = os.path.join(ROOT, "configs", "segmenter",
                     "segmenter_vit-b_expedite-a6-24x24_ade20k-512x512.py")
STOCK = "mmseg::segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py"
PAPER_RATIO = 91.9 / 124.7
MEASURED_RATIO = 0.7344           # fvcore: 95.04 / 129.42 GFLOPs


def _whole_model_gflops(model_cfg) -> float:
    model_cfg.pretrained = None
    model = MODELS.build(model_cfg).eval()
    report = count_flops(model, (torch.randn(1, 3, 512, 512),))   # mode='tensor': the logits
    return report.total / 1e9


@pytest.mark.slow
def test_vit_b_config_matches_the_paper_gflops_ratio():
    init_default_scope("mmseg")
    expedited = Config.fromfile(VIT_B)
    assert expedited.model.type == "ExpeditedEncoderDecoder"
    assert expedited.model.backbone.reconstruct_placement == "logits"
    stock = Config.fromstring(f"_base_ = {STOCK!r}\n", ".py")   # the official config alone
    assert stock.model.backbone.type == "VisionTransformer"
    ratio = _whole_model_gflops(expedited.model) / _whole_model_gflops(stock.model)
    assert ratio == pytest.approx(MEASURED_RATIO, abs=0.005)
    assert abs(ratio - PAPER_RATIO) <= 0.005, ratio
