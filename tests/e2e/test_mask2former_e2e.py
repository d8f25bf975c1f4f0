"""The Mask2Former configs end to end through tools/test.py on synthetic datasets.

Each test config inherits one of ours and only shrinks the Swin (16 wide, depths
2-2-4-2, window 12 -> 8 kept), the head (queries, layers) and the test resize (short side
192: a 12x16 stage-3 map, padded to two 12x12 windows), so the real mmdet/mmseg dataset
classes, pipelines, evaluators and checkpoint loading run as they do for users. The
checkpoint is saved from the *stock* model in the official format and loads unmodified.
The synthetic COCO panoptic (json + RGB-encoded png + instances json), ADE20K (semantic
and panoptic) and YouTube-VIS (CocoVID json, RLE masks) datasets come from
tests/helpers/harness.py; the metrics are mmdet's/mmseg's own evaluators.
"""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from harness import (IMAGE_SIZES, VIDEO_LENGTH, VIDEO_SIZES, independent_miou, run_test_tool,
                     write_ade20k, write_ade20k_panoptic, write_coco_panoptic, write_youtube_vis)

from harness import ROOT  # noqa: E402
CONFIGS = osp.join(ROOT, "configs", "mask2former")
VIS_CONFIGS = osp.join(ROOT, "configs", "mask2former_vis")
EXPEDITE_KEYS = ("stage", "cluster_after", "reconstruct_after", "clustered_window_size",
                 "cluster_window", "cluster_iters", "temperature", "reconstruct_k",
                 "reconstruct_normalize", "reconstruct_neighbours", "reconstruct_ties",
                 "attention_mask_shift")
TINY_SWIN = "embed_dims=16, depths=[2, 2, 4, 2], num_heads=[1, 2, 2, 4], drop_path_rate=0.0"
# a lighter head: fewer queries and layers (the widths stay: they are nested everywhere)
TINY_HEAD = ("in_channels=[16, 32, 64, 128], num_queries=20, "
             "pixel_decoder=dict(encoder=dict(num_layers=1)), "
             "transformer_decoder=dict(num_layers=3)")


# --------------------------------------------------------------------------- configs
def write_panoptic_config(tmp, base, data_root, cluster_after, scale, evaluator):
    """A test config inheriting ``base``: the tiny Swin and head, a small test resize, the
    synthetic dataset at ``data_root`` and ``evaluator`` (config text)."""
    path = tmp / f"tiny_{osp.basename(base)}"
    path.write_text(f"""
_base_ = {base!r}
model = dict(
    backbone=dict({TINY_SWIN}, cluster_after={cluster_after}),
    panoptic_head=dict({TINY_HEAD}))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale={scale!r}, keep_ratio=True),
    dict(type='LoadPanopticAnnotations'),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root + '/'!r}, pipeline=test_pipeline))
test_evaluator = {evaluator}
env_cfg = dict(cudnn_benchmark=False)
""")
    return str(path)


def write_coco_config(tmp, base, data_root, cluster_after):
    return write_panoptic_config(tmp, base, data_root, cluster_after, (256, 192), f"""[
    dict(type='CocoPanopticMetric',
         ann_file={data_root + '/annotations/panoptic_val2017.json'!r},
         seg_prefix={data_root + '/annotations/panoptic_val2017/'!r}),
    dict(type='CocoMetric', ann_file={data_root + '/annotations/instances_val2017.json'!r},
         metric=['bbox', 'segm'])]""")


def write_ade_panoptic_config(tmp, base, data_root, cluster_after):
    return write_panoptic_config(tmp, base, data_root, cluster_after, (1024, 192), f"""dict(
    ann_file={data_root + '/ade20k_panoptic_val.json'!r},
    seg_prefix={data_root + '/ade20k_panoptic_val/'!r})""")


def write_vis_config(tmp, base, data_root, version, cluster_after):
    path = tmp / f"tiny_{osp.basename(base)}"
    path.write_text(f"""
_base_ = {base!r}
model = dict(
    backbone=dict({TINY_SWIN}, cluster_after={cluster_after}),
    track_head=dict({TINY_HEAD}))
test_pipeline = [
    dict(type='TransformBroadcaster',
         transforms=[dict(type='LoadImageFromFile'),
                     dict(type='Resize', scale=(1024, 192), keep_ratio=True),
                     dict(type='LoadTrackAnnotations', with_mask=True)]),
    dict(type='PackTrackInputs')]
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root={data_root + '/'!r}, dataset_version={version!r},
                 ann_file='annotations/youtube_vis_{version}_valid.json', pipeline=test_pipeline))
# (the configs' evaluator formats the results for the benchmark server: kept, written here)
test_evaluator = dict(outfile_prefix={str(tmp / 'vis_results')!r})
env_cfg = dict(cudnn_benchmark=False)
""")
    return str(path)


def write_ade_config(tmp, base, data_root, cluster_after):
    path = tmp / f"tiny_{osp.basename(base)}"
    path.write_text(f"""
_base_ = {base!r}
model = dict(
    backbone=dict({TINY_SWIN}, cluster_after={cluster_after}),
    decode_head=dict({TINY_HEAD}))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1024, 192), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')]
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root!r}, pipeline=test_pipeline))
env_cfg = dict(cudnn_benchmark=False)
""")
    return str(path)


def save_official_checkpoint(config, path, package):
    """Build the config's model with the *stock* SwinTransformer and save it the way the
    official releases are saved (meta with numpy values + state_dict)."""
    from expedite_mm.apis.config import build_model, load_config
    cfg = load_config(config)
    backbone = cfg.model.backbone
    backbone.type = "SwinTransformer"
    for key in EXPEDITE_KEYS:
        backbone.pop(key, None)
    cfg.model.pop("init_cfg", None)              # (the VIS recipe's COCO initialisation)
    model = build_model(cfg)
    assert type(model.backbone).__module__.startswith(package)
    torch.save({"meta": {f"{package}_version": "1.0.0", "iter": np.int64(737500),
                         "seed": np.int64(0)},
                "state_dict": model.state_dict()}, path)
    return str(path)


def run_checked(config, checkpoint, tmp, name, *extra):
    """tools/test.py, checking that the official-format checkpoint loaded unmodified."""
    metrics, predictions, log = run_test_tool(config, checkpoint, tmp, name, *extra)
    assert "do not match exactly" not in log and "missing keys" not in log, log[-4000:]
    return metrics, predictions


# --------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco_panoptic(str(tmp_path_factory.mktemp("coco") / "coco"))


@pytest.mark.slow
@pytest.mark.parametrize("config,cluster_after", [
    ("mask2former_swin-l_expedite-a10-w8_coco-panoptic.py", 2),
    ("mask2former_swin-l_expedite-a12-w8_coco-instance.py", 3),
])
def test_coco_configs_through_test_tool(config, cluster_after, coco_root, tmp_path):
    tiny = write_coco_config(tmp_path, osp.join(CONFIGS, config), coco_root, cluster_after)
    checkpoint = save_official_checkpoint(tiny, tmp_path / "official.pth", "mmdet")
    metrics, predictions = run_checked(tiny, checkpoint, tmp_path, "expedited")

    for key in ("coco_panoptic/PQ", "coco_panoptic/SQ", "coco_panoptic/RQ"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics)
    for key in ("coco/bbox_mAP", "coco/segm_mAP"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert len(predictions) == 3
    for sample, (h, w) in zip(sorted(predictions, key=lambda p: p["img_id"]), IMAGE_SIZES):
        assert tuple(sample["ori_shape"]) == (h, w)
        assert tuple(sample["pred_panoptic_seg"]["sem_seg"].shape) == (1, h, w)
        assert all(tuple(m["size"]) == (h, w) for m in sample["pred_instances"]["masks"])

    # (expedited vs --cfg-options model.backbone.cluster_after=None: the ADE20K test below)


@pytest.mark.slow
def test_ade20k_config_through_test_tool(tmp_path):
    data_root = write_ade20k(str(tmp_path / "ade"))
    tiny = write_ade_config(
        tmp_path, osp.join(CONFIGS, "mask2former_swin-l_expedite-a7-w8_ade20k-640x640.py"),
        data_root, cluster_after=1)
    checkpoint = save_official_checkpoint(tiny, tmp_path / "official.pth", "mmseg")
    metrics, predictions = run_checked(tiny, checkpoint, tmp_path, "expedited")
    assert len(predictions) == 3
    assert metrics["mIoU"] == pytest.approx(independent_miou(predictions, data_root), abs=0.006)
    _, stock = run_checked(tiny, checkpoint, tmp_path, "stock",
                             "--cfg-options", "model.backbone.cluster_after=None")
    logits = [p["seg_logits"]["data"] for p in predictions]
    stock_logits = [p["seg_logits"]["data"] for p in stock]
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(logits, stock_logits))


@pytest.mark.slow
def test_ade20k_panoptic_config_through_test_tool(tmp_path):
    data_root = write_ade20k_panoptic(str(tmp_path / "ade"))
    tiny = write_ade_panoptic_config(
        tmp_path, osp.join(CONFIGS, "mask2former_swin-l_expedite-a14-w8_ade20k-panoptic.py"),
        data_root, cluster_after=3)
    checkpoint = save_official_checkpoint(tiny, tmp_path / "official.pth", "mmdet")
    metrics, predictions = run_checked(tiny, checkpoint, tmp_path, "expedited")
    for key in ("coco_panoptic/PQ", "coco_panoptic/SQ", "coco_panoptic/RQ"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics)
    assert len(predictions) == 3
    for sample, (h, w) in zip(sorted(predictions, key=lambda p: p["img_id"]), IMAGE_SIZES):
        assert tuple(sample["ori_shape"]) == (h, w)
        assert tuple(sample["pred_panoptic_seg"]["sem_seg"].shape) == (1, h, w)
        # ADE20K's 150 classes: labels are class indices or the "void" label 150
        labels = sample["pred_panoptic_seg"]["sem_seg"] % 1000   # id = label + 1000 * instance
        assert labels.max() <= 150


@pytest.mark.slow
@pytest.mark.parametrize("config,version", [
    ("mask2former_swin-l_expedite-a14-w8_youtubevis2019.py", "2019"),
    ("mask2former_swin-l_expedite-a14-w8_youtubevis2021.py", "2021"),
])
def test_youtube_vis_configs_through_test_tool(config, version, tmp_path):
    """Each clip's frames go through the backbone as one batch (each frame clustered on
    its own); mmdet's YouTubeVISMetric writes the tracks in the benchmark's format, as the
    configs ask (the YouTube-VIS valid annotations are not public). Its local evaluation
    path (format_only=False) is broken in mmdet 3.3 with numpy >= 1.24 (np.float)."""
    from pycocotools import mask as mask_util
    data_root = write_youtube_vis(str(tmp_path / "ytvis"), version)
    tiny = write_vis_config(tmp_path, osp.join(VIS_CONFIGS, config), data_root, version,
                            cluster_after=2)
    checkpoint = save_official_checkpoint(tiny, tmp_path / "official.pth", "mmdet")
    _, predictions = run_checked(tiny, checkpoint, tmp_path, "expedited")
    tracks = json.loads((tmp_path / "vis_results.json").read_text())
    assert len(predictions) == len(VIDEO_SIZES)
    for video_id, (video, (h, w)) in enumerate(zip(predictions, VIDEO_SIZES), start=1):
        frames = video["video_data_samples"]
        assert len(frames) == VIDEO_LENGTH
        assert all(tuple(frame.metainfo["ori_shape"]) == (h, w) for frame in frames)
        ours = [t for t in tracks if t["video_id"] == video_id]
        assert ours and all(len(t["segmentations"]) == VIDEO_LENGTH for t in ours)
        # the submission's masks are the predicted ones, frame by frame, at full size
        for frame_id, frame in enumerate(frames):
            masks = frame.pred_track_instances.masks.numpy().astype(np.uint8)
            assert masks.shape[1:] == (h, w) and len(masks) > 0
            submitted = [mask_util.decode(t["segmentations"][frame_id]) for t in ours
                         if t["segmentations"][frame_id] is not None]
            assert submitted and all(any(np.array_equal(s, m) for m in masks)
                                     for s in submitted)


def test_ade20k_panoptic_training_pipeline_runs(tmp_path):
    """The stock ADE20K panoptic base's training data pipeline (multi-scale resize, 640
    crop, photometric distortion, flip) on the synthetic panoptic annotations."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    from expedite_mm.apis.config import load_config
    data_root = write_ade20k_panoptic(str(tmp_path / "ade"))
    cfg = load_config(osp.join(CONFIGS, "mask2former_swin-l-p4-w12-384-in21k_8xb2-160k_ade20k-panoptic.py"))
    init_default_scope("mmdet")
    dataset = cfg.train_dataloader.dataset
    dataset.update(data_root=data_root + "/", ann_file="ade20k_panoptic_val.json",
                   data_prefix=dict(img="images/validation/", seg="ade20k_panoptic_val/"))
    sample = DATASETS.build(dataset)[0]
    image, gt = sample["inputs"], sample["data_samples"]
    h, w = image.shape[1:]
    assert image.shape[0] == 3 and max(h, w) <= 640 and min(h, w) >= 1
    assert tuple(gt.gt_sem_seg.sem_seg.shape[1:]) == (h, w)
    assert len(gt.gt_instances) <= 2 and gt.gt_instances.masks.height == h
