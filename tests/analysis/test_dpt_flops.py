"""GFLOPs (fvcore, whole DepthEstimator) of the six released DPT-Hybrid rows vs the release.

The published numbers (Expedit-DPT README; GFLOPs of the whole model) are compared as
ratios expedited / stock measured side by side here (docs/method.md §6: counters differ).
To stay cheap on CPU the stock model of each dataset is traced once, whole; an expedited
row differs from it only in the ViT (same input, same ResNet, the head sees full-resolution
taps), so its whole-model count is ``stock - stock ViT + expedited ViT`` with the ViT part
traced on its own. ``test_whole_model_count_decomposes`` checks that identity on whole
traces of a small model.
"""
import os.path as osp
from typing import Tuple

import pytest
import torch
from mmengine.config import Config

import expedite_mm

expedite_mm.register_all_modules()
from expedite_mm.apis.config import build_model
from expedite_mm.analysis.flops import count_flops

from harness import ROOT  # noqa: E402
DPT = osp.join(ROOT, "configs", "dpt")
# dataset: (stock config, input (H, W), published stock GFLOPs,
#           [(expedited config, released row, published GFLOPs), ...])
RELEASED = {
    "kitti": ("dpt_hybrid-r50-vitb16_kitti-352x1216.py", (352, 1216), 810.0, [
        ("dpt_hybrid-r50-vitb16_expedite-a7-14x56_kitti-352x1216.py", "alpha 6, 28x28", 723.4),
        ("dpt_hybrid-r50-vitb16_expedite-a5-20x20_kitti-352x1216.py", "alpha 4, 20x20", 631.8),
        ("dpt_hybrid-r50-vitb16_expedite-a5-16x16_kitti-352x1216.py", "alpha 4, 16x16", 613.6),
    ]),
    "nyu": ("dpt_hybrid-r50-vitb16_nyu-480x640.py", (480, 640), 560.2, [
        ("dpt_hybrid-r50-vitb16_expedite-a7-24x24_nyu-480x640.py", "alpha 6, 24x24", 504.2),
        ("dpt_hybrid-r50-vitb16_expedite-a5-16x16_nyu-480x640.py", "alpha 4, 16x16", 439.2),
        ("dpt_hybrid-r50-vitb16_expedite-a3-14x14_nyu-480x640.py", "alpha 2, 14x14", 395.0),
    ]),
}
# Our whole-model ratios, measured (fvcore, torch 2.13, 2026-12-03); pinned, and the gap to the release's reported
# on its own: within 0.01, which the other reading of the release's alpha (clustering
# after block alpha, 0-based, read as after layer alpha: one layer earlier, every ratio
# ~0.03 lower) does not reach.
MEASURED = {
    "dpt_hybrid-r50-vitb16_expedite-a7-14x56_kitti-352x1216.py": 0.8859,
    "dpt_hybrid-r50-vitb16_expedite-a5-20x20_kitti-352x1216.py": 0.7785,
    "dpt_hybrid-r50-vitb16_expedite-a5-16x16_kitti-352x1216.py": 0.7572,
    "dpt_hybrid-r50-vitb16_expedite-a7-24x24_nyu-480x640.py": 0.8951,
    "dpt_hybrid-r50-vitb16_expedite-a5-16x16_nyu-480x640.py": 0.7848,
    "dpt_hybrid-r50-vitb16_expedite-a3-14x14_nyu-480x640.py": 0.7062,
}
PIN, PUBLISHED_GAP, OTHER_READING_GAP = 0.002, 0.01, 0.015


class WholeModel(torch.nn.Module):
    """``DepthEstimator._forward`` (backbone + head, no post-processing) on one tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        return self.model._forward(inputs)


class ViTPart(torch.nn.Module):
    """The ViT of a (Expedited)HybridViT on given ResNet features: everything after the
    ResNet (patch embedding, position embedding, layers, clustering/reconstruction)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, features):
        return self.backbone.vit_forward(features)


def vit_flops(backbone, shape: Tuple[int, int]) -> int:
    features = torch.rand(1, backbone.resnet.out_channels[-1],
                          *[-(-s // backbone.resnet.stride) for s in shape])
    return count_flops(ViTPart(backbone), (features,)).total


def stock_counts(model, shape):
    """(whole model, its backbone minus the ResNet) from one whole-model trace."""
    report = count_flops(WholeModel(model), (torch.rand(1, 3, *shape),))
    vit = report.module("model.backbone") - report.module("model.backbone.resnet")
    assert report.total > 0 and 0 < vit < report.total
    return report.total, vit


def test_whole_model_count_decomposes():
    """Small model: whole(expedited) == whole(stock) - ViT(stock) + ViT(expedited)."""
    path = osp.join(DPT, RELEASED["kitti"][0])
    small = dict(resnet_depths=(1, 1, 1), resnet_channels=(16, 32, 64), resnet_stem_channels=8,
                 resnet_num_groups=4, img_size=64, embed_dims=32, num_heads=2)
    head = dict(in_channels=(16, 32, 32, 32), post_process_channels=(16, 32, 32, 32),
                channels=16, head_channels=8)
    cfg = Config.fromfile(path)
    cfg.model.backbone.update(small)
    cfg.model.decode_head.update(head)
    stock = build_model(cfg)
    cfg.model.backbone.update(type="ExpeditedHybridViT", cluster_after=5, cluster_grid=(8, 12))
    expedited = build_model(cfg)
    shape = (192, 320)                                      # 12 x 20 tokens
    whole, stock_vit = stock_counts(stock, shape)
    fast = count_flops(WholeModel(expedited), (torch.rand(1, 3, *shape),)).total
    assert fast == whole - stock_vit + vit_flops(expedited.backbone, shape)
    assert stock_vit == vit_flops(stock.backbone, shape)
    assert fast < whole


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(RELEASED))
def test_gflops_ratios_match_the_released_rows(dataset):
    stock_path, shape, published_stock, rows = RELEASED[dataset]
    whole, stock_vit = stock_counts(build_model(Config.fromfile(osp.join(DPT, stock_path))), shape)
    lines = [f"{dataset} {shape[1]}x{shape[0]}: stock {whole / 1e9:.1f} GFLOPs (fvcore), "
             f"published {published_stock}"]
    failures = []
    for path, row, published in rows:
        cfg = Config.fromfile(osp.join(DPT, path))
        model = build_model(cfg)
        assert model.backbone.expedited
        ratio = (whole - stock_vit + vit_flops(model.backbone, shape)) / whole
        published_ratio = published / published_stock
        # the release's alpha read the other way: clustering one layer earlier
        cfg.model.backbone.cluster_after -= 1
        other = (whole - stock_vit + vit_flops(build_model(cfg).backbone, shape)) / whole
        lines.append(f"  {row:15s} {path}: ratio {ratio:.4f} (pinned {MEASURED[path]}), "
                     f"published {published} / {published_stock} = {published_ratio:.4f} "
                     f"(gap {ratio - published_ratio:+.4f}); other alpha reading {other:.4f}")
        if abs(ratio - MEASURED[path]) > PIN or abs(ratio - published_ratio) > PUBLISHED_GAP \
                or abs(other - published_ratio) < OTHER_READING_GAP:
            failures.append(row)
    print("\n".join(lines))
    assert not failures, "\n".join(lines)
