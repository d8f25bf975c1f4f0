"""The SwinV2 detection configs: backbone GFLOPs of HTC++ SwinV2-L, and both configs end to
end through tools/test.py on a synthetic COCO dataset.

GFLOPs: fvcore, the config's own backbone (SwinV2-L, window 32 -> 23 in stage 3), at
512x512 -- the smallest input whose stage maps (128, 64, 32, 16) are whole numbers of
windows (32, 32, 32, 16), as at 1536x1536: every window then costs the same, so the ratio
equals the 1536 one up to the per-forward position-bias MLP (0.5 % of the count).

End to end: test configs inherit ours and only shrink the SwinV2 (16 wide, depths 2-2-4-2,
the configs' windows kept), the test resize and the number of detections, so the real
mmdet dataset, pipelines (Soft-NMS, HTC's semantic branch), CocoMetric and checkpoint
loading run as they do for users. The checkpoint is saved from the *stock* model in the
official format and loads unmodified.
"""
import os.path as osp
import re

import numpy as np
import pytest
import torch

from harness import IMAGE_SIZES, run_test_tool, write_coco_panoptic

from harness import ROOT  # noqa: E402
HTC = osp.join(ROOT, "configs", "htc++", "htc++_swinv2-l_expedite-a12-w23_coco.py")
MASK_RCNN = osp.join(ROOT, "configs", "mask_rcnn",
                     "mask-rcnn_swinv2-b-w16_expedite-a12-w12_fpn_ms-crop-3x_coco.py")
TINY_ARCH = ("arch=dict(_delete_=True, embed_dims=16, depths=[2, 2, 4, 2], num_heads=[1, 2, 2, 4], "
             "extra_norm_every_n_blocks=0), drop_path_rate=0.0, init_cfg=None")
MEASURED_RATIO = 0.8009   # HTC++ SwinV2-L backbone at 512x512, expedited / stock (fvcore)
# Buffers mmpretrain's SwinV2 always rebuilds: its load hook drops them from checkpoints.
REBUILT_BUFFERS = ("relative_coords_table", "relative_position_index")


@pytest.mark.slow
def test_htc_swinv2_l_backbone_gflops_ratio():
    import expedite_mm
    expedite_mm.register_all_modules()
    from expedite_mm.apis.config import build_model, disable_expedite, load_config
    from expedite_mm.analysis.flops import count_flops

    cfg = load_config(HTC)
    x = torch.rand(1, 3, 512, 512)
    counts = {}
    for name, variant in (("stock", disable_expedite(cfg)), ("expedited", cfg)):
        backbone = build_model(variant).backbone
        assert backbone.expedited == (name == "expedited")
        counts[name] = count_flops(backbone, (x,))
        del backbone
    ratio = counts["expedited"].total / counts["stock"].total
    print(f"HTC++ SwinV2-L backbone at 512x512: {counts['stock'].total / 1e9:.2f} -> "
          f"{counts['expedited'].total / 1e9:.2f} GFLOPs, ratio {ratio:.4f}")
    # ours, measured: 227.83 -> 182.47 GFLOPs; the paper's -20 % (0.80) is 0.001 away
    assert ratio == pytest.approx(MEASURED_RATIO, abs=0.002)
    assert counts["expedited"].module("clustering") > 0
    assert counts["expedited"].module("reconstruction") > 0
    assert not {"aten::matmul", "aten::linear", "aten::bmm"} & set(counts["expedited"].unsupported)


# --------------------------------------------------------------------------- end to end
def write_tiny_config(tmp, base, data_root, backbone, head="", scale=(256, 192)):
    path = tmp / f"tiny_{osp.basename(base)}"
    path.write_text(f"""
_base_ = {base!r}
model = dict(
    backbone=dict({TINY_ARCH}, {backbone}),
    neck=dict(in_channels=[16, 32, 64, 128]),
    # random weights score every class about 1/81: keep them (Mask R-CNN's threshold is 0.05)
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100),
                  rcnn=dict(score_thr=0.001, max_per_img=10)){head})
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale={scale!r}, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root + '/'!r},
                                    ann_file='annotations/instances_val2017.json',
                                    data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
test_evaluator = dict(ann_file={data_root + '/annotations/instances_val2017.json'!r})
env_cfg = dict(cudnn_benchmark=False)
""")
    return str(path)


def save_official_checkpoint(config, path):
    """The config's model with mmpretrain's *stock* SwinTransformerV2, saved as official
    releases are (meta with numpy values + state_dict)."""
    import expedite_mm
    expedite_mm.register_all_modules()
    from expedite_mm.apis.config import build_model, load_config
    from mmpretrain.models.backbones.swin_transformer_v2 import SwinTransformerV2
    cfg = load_config(config)
    stock = {key: value for key, value in cfg.model.backbone.items()
             if key in ("type", "arch", "img_size", "window_size", "pretrained_window_sizes",
                        "drop_path_rate", "out_indices", "pad_small_map", "init_cfg")}
    stock["type"] = "SwinTransformerV2"
    cfg.model.backbone = stock
    model = build_model(cfg)
    assert type(model.backbone) is SwinTransformerV2
    torch.save({"meta": {"mmdet_version": "3.3.0", "epoch": np.int64(72)},
                "state_dict": model.state_dict()}, path)
    return str(path)


def run_checked(config, checkpoint, tmp, name, *extra):
    """tools/test.py, checking the log: the checkpoint loads unmodified (nothing
    unexpected; the only "missing" keys are the buffers mmpretrain deletes on load and
    rebuilds for the configured window) and clustering really ran."""
    metrics, predictions, log = run_test_tool(config, checkpoint, tmp, name, *extra)
    assert "unexpected key" not in log, log[-4000:]
    for listing in re.findall(r"missing keys in source state_dict: (.*)", log):
        assert all(key.strip().endswith(REBUILT_BUFFERS) for key in listing.split(",")), listing
    assert "not fewer tokens" not in log
    return metrics, predictions, log


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco_panoptic(str(tmp_path_factory.mktemp("coco") / "coco"))


def check_predictions(metrics, predictions):
    for key in ("coco/bbox_mAP", "coco/segm_mAP"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert len(predictions) == 3
    for sample, (h, w) in zip(sorted(predictions, key=lambda p: p["img_id"]), IMAGE_SIZES):
        assert tuple(sample["ori_shape"]) == (h, w)
        instances = sample["pred_instances"]
        assert 0 < len(instances["scores"]) <= 10
        assert all(tuple(mask["size"]) == (h, w) for mask in instances["masks"])


@pytest.mark.slow
def test_small_swinv2_config_through_test_tool(coco_root, tmp_path):
    """Mask R-CNN SwinV2-B (window 16 -> 12), expedited and disabled, same checkpoint."""
    tiny = write_tiny_config(tmp_path, MASK_RCNN, coco_root,
                             "cluster_after=2, reconstruct_after=4")  # stage 3 has 4 blocks
    checkpoint = save_official_checkpoint(tiny, tmp_path / "official.pth")
    metrics, predictions, _ = run_checked(tiny, checkpoint, tmp_path, "expedited")
    check_predictions(metrics, predictions)

    _, stock, _ = run_checked(tiny, checkpoint, tmp_path, "stock", "--cfg-options",
                                "model.backbone.cluster_after=None",
                                "model.backbone.reconstruct_after=None")
    scores = [np.sort(p["pred_instances"]["scores"].numpy()) for p in predictions]
    stock_scores = [np.sort(p["pred_instances"]["scores"].numpy()) for p in stock]
    assert not all(a.shape == b.shape and np.allclose(a, b)
                   for a, b in zip(scores, stock_scores))


@pytest.mark.slow
def test_htc_swinv2_config_through_test_tool(coco_root, tmp_path):
    """HTC++ (semantic branch, Soft-NMS) with the paper's window 32 -> 23: inputs resized
    to 384 px so that stage 3 (24 x 32 tokens) holds a window to cluster."""
    tiny = write_tiny_config(tmp_path, HTC, coco_root, "cluster_after=2, reconstruct_after=4",
                             scale=(512, 384))
    checkpoint = save_official_checkpoint(tiny, tmp_path / "official.pth")
    metrics, predictions, _ = run_checked(tiny, checkpoint, tmp_path, "expedited")
    check_predictions(metrics, predictions)


def test_tools_copy_weights_between_swinv2_models(tmp_path):
    """mmpretrain's SwinTransformerV2 drops its derived position tables from every state
    dict it loads (a load hook), so a strict ``load_state_dict`` of one SwinV2 model's
    state dict into another fails. The tools that give the stock model the expedited one's
    weights (benchmark.py, sweep.py, backbone_fidelity.py, the demo) and the autotuner's
    weight sharing load through ``load_state_dict_checked``, which allows exactly those."""
    import expedite_mm
    expedite_mm.register_all_modules()
    from expedite_mm.apis.checkpoint import load_state_dict_checked
    from expedite_mm.apis.config import (build_model, build_model_sharing, disable_expedite,
                                          load_config)
    from harness import command_json
    tiny = write_tiny_config(tmp_path, MASK_RCNN, str(tmp_path),
                             "cluster_after=2, reconstruct_after=4")
    cfg = load_config(tiny)
    expedited, stock = build_model(cfg), build_model(disable_expedite(cfg))
    with pytest.raises(RuntimeError, match="Missing key.*relative_coords_table"):
        stock.load_state_dict(expedited.state_dict())
    assert load_state_dict_checked(stock, expedited.state_dict())["missing"] == []
    shared = build_model_sharing(disable_expedite(cfg), expedited)
    assert shared.backbone.stages[2].blocks[0].attn.w_msa.qkv.weight.data_ptr() == \
        expedited.backbone.stages[2].blocks[0].attn.w_msa.qkv.weight.data_ptr()
    summary = command_json(tmp_path, "benchmark", tiny, "--mode", "tensor", "--shape", "256",
                           "192", "--repeat", "1", "--warmup", "0", "--no-memory",
                           "--threads", "1")
    assert summary["latency_ratio"] > 0
