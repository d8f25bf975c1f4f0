"""Backbone GFLOPs of the ADE20K panoptic and YouTube-VIS Mask2Former rows (fvcore), from
the configs themselves, against the published ones (checkpoints.md, Mask2Former).

The release counts the backbone alone with fvcore: one 1152x1152 image for the image
rows, one clip through the backbone as a batch for the video rows -- 28 frames at 480x832
(2019) and 32 at 400x640 (2021), its tools/get_fps_flops_video.py. Every layer of the
backbone, clustering and reconstruction included, works per image, so a clip costs its
frame count times one frame (checked below), and at 1152 every stage map is a whole
number of windows, so 1152x1152 costs exactly 9 times 384x384: the tests count the cheaper
input and scale. The stock counts then equal the published ones, and the ratios are pinned
to our measurement (+-0.005) and to the published ratio (+-0.03).
"""
import os.path as osp

import pytest
import torch

import expedite_mm

expedite_mm.register_all_modules()
from expedite_mm.analysis.flops import config_flops, count_flops

from harness import ROOT  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("config,shape,scale,published,ours", [
    # ADE20K panoptic a14: 937 -> 769 at 1152x1152 = 9 x 384x384
    ("mask2former/mask2former_swin-l_expedite-a14-w8_ade20k-panoptic.py", (384, 384), 9,
     (937, 769), 0.8195),
    # YouTube-VIS 2019 a14: 8957 -> 7631 for 28 frames at 480x832
    ("mask2former_vis/mask2former_swin-l_expedite-a14-w8_youtubevis2019.py", (480, 832), 28,
     (8957, 7631), 0.8507),
    # YouTube-VIS 2021 a14: 7159 -> 6253 for 32 frames at 400x640
    ("mask2former_vis/mask2former_swin-l_expedite-a14-w8_youtubevis2021.py", (400, 640), 32,
     (7159, 6253), 0.8712),
])
def test_backbone_gflops_match_published(config, shape, scale, published, ours):
    result = config_flops(osp.join(ROOT, "configs", config), shape, backbone_only=True)
    stock = result["stock"].backbone * scale / 1e9
    expedited = result["expedited"].backbone * scale / 1e9
    assert stock == pytest.approx(published[0], abs=2.0)            # the release's input
    ratio = expedited / stock
    assert ratio == pytest.approx(ours, abs=0.005)
    assert abs(ratio - published[1] / published[0]) <= 0.03
    assert result["expedited"].expedite_ops > 0                      # counted, not skipped


def test_clip_costs_frames_times_one_frame():
    """The clustered backbone on a batch of frames costs the frame count times one frame
    (what scaling the one-frame count to a clip assumes), but for the window-8 bias tables,
    resized once per forward: fvcore counts bilinear resizing as 4 flops per output,
    15 x 15 rows x 2 heads for each of the 2 clustered blocks (negligible at Swin-L size)."""
    from mmdet.registry import MODELS
    backbone = MODELS.build(dict(type="ExpeditedSwin", embed_dims=16, depths=[2, 2, 4, 2],
                                 num_heads=[1, 2, 2, 4], window_size=12, cluster_after=2,
                                 clustered_window_size=8, cluster_window=7, cluster_iters=4,
                                 temperature=100.0, reconstruct_k=49,
                                 reconstruct_normalize="l2", reconstruct_ties="keep",
                                 attention_mask_shift="stock"))
    backbone.eval()
    frame = torch.randn(1, 3, 240, 416)
    # the same frame thrice: with ties kept, how many centres tie is data-dependent
    one = count_flops(backbone, (frame,)).total
    three = count_flops(backbone, (frame.repeat(3, 1, 1, 1),)).total
    resize = 4 * 15 * 15 * 2 * 2
    assert one > 0 and three - resize == 3 * (one - resize)
