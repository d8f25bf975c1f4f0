"""KITTI depth dataset, KBCrop, MonoDepthMetric; tools/test.py on synthetic KITTI and NYU.

The end-to-end runs use our expedited KITTI/NYU configs by inheritance (tiny widths), a
checkpoint made by dpt2mmseg.py from a release-format one, and datasets the test writes
in the official layouts; the reported RMSE / abs_rel are recomputed here from the dumped
predictions and the ground-truth files, with the protocol (KB crop, Garg / NYU crop,
depth caps, prediction clipping, per-image mean) written out by hand.
"""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, METRICS, TRANSFORMS

import expedite_mm

expedite_mm.register_all_modules()
from harness import run_test_tool
from naive_dpt import ReleaseDPTHybrid, randomize_
from expedite_mm.converters.dpt import convert_checkpoint

from harness import ROOT  # noqa: E402
KITTI_CONFIG = osp.join(ROOT, "configs/dpt/dpt_hybrid-r50-vitb16_expedite-a5-16x16_kitti-352x1216.py")
NYU_CONFIG = osp.join(ROOT, "configs/dpt/dpt_hybrid-r50-vitb16_expedite-a3-14x14_nyu-480x640.py")
KITTI_DRIVE = "2011_09_26_drive_0002_sync"


def write_kitti(root, sizes=((375, 1242), (376, 1241), (370, 1224))):
    """Eigen-split layout: raw RGB, 16-bit depth x 256 ground truth (0 = no measurement,
    some beyond the 80 m cap), a split file with one line without ground truth."""
    rng = np.random.default_rng(0)
    lines = []
    for i, (h, w) in enumerate(sizes):
        image = f"2011_09_26/{KITTI_DRIVE}/image_02/data/{i:010d}.png"
        depth = f"{KITTI_DRIVE}/proj_depth/groundtruth/image_02/{i:010d}.png"
        os.makedirs(osp.dirname(osp.join(root, "raw", image)), exist_ok=True)
        os.makedirs(osp.dirname(osp.join(root, "gt", depth)), exist_ok=True)
        cv2.imwrite(osp.join(root, "raw", image), rng.integers(0, 256, (h, w, 3), np.uint8))
        meters = rng.uniform(1.0, 95.0, (h, w)) * (rng.random((h, w)) < 0.3)   # sparse lidar
        cv2.imwrite(osp.join(root, "gt", depth), np.round(meters * 256).astype(np.uint16))
        lines.append(f"{image} {depth} 721.5377")
    lines.insert(1, f"2011_09_26/{KITTI_DRIVE}/image_02/data/0000000099.png None 721.5377")
    with open(osp.join(root, "eigen_test_files_with_gt.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


def write_nyu(root, names=("bathroom_0001", "kitchen_0002")):
    """mmseg's NYU layout: images/test/*.jpg, annotations/test/*.png (16-bit millimetres)."""
    rng = np.random.default_rng(1)
    os.makedirs(osp.join(root, "images/test"))
    os.makedirs(osp.join(root, "annotations/test"))
    for name in names:
        cv2.imwrite(osp.join(root, "images/test", name + ".jpg"),
                    rng.integers(0, 256, (480, 640, 3), np.uint8))
        meters = rng.uniform(0.5, 12.0, (480, 640)) * (rng.random((480, 640)) < 0.9)
        cv2.imwrite(osp.join(root, "annotations/test", name + ".png"),
                    np.round(meters * 1000).astype(np.uint16))
    return root


# ----------------------------------------------------------------------- unit tests
def test_kitti_split_file_parsing(tmp_path):
    root = write_kitti(str(tmp_path / "kitti"), sizes=((375, 1242), (376, 1241)))
    init_default_scope("mmseg")
    dataset = DATASETS.build(dict(type="KITTIDepthDataset", data_root=root, test_mode=True,
                                  ann_file="eigen_test_files_with_gt.txt"))
    assert len(dataset) == 2                                  # the 'None' line is skipped
    info = dataset.get_data_info(1)
    assert info["img_path"] == osp.join(root, "raw", f"2011_09_26/{KITTI_DRIVE}/image_02/data/"
                                        "0000000001.png")
    assert info["depth_map_path"].startswith(osp.join(root, "gt", KITTI_DRIVE))
    assert info["focal"] == pytest.approx(721.5377)
    with open(osp.join(root, "bad.txt"), "w") as f:
        f.write("a.png b.png\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        DATASETS.build(dict(type="KITTIDepthDataset", data_root=root, ann_file="bad.txt",
                            test_mode=True))


def test_kb_crop_bottom_centre():
    init_default_scope("mmseg")
    crop = TRANSFORMS.build(dict(type="KBCrop"))
    img = np.arange(375 * 1242 * 3, dtype=np.int64).reshape(375, 1242, 3)
    depth = np.arange(375 * 1242, dtype=np.float32).reshape(375, 1242)
    out = crop(dict(img=img, gt_depth_map=depth, seg_fields=["gt_depth_map"],
                    img_shape=(375, 1242), ori_shape=(375, 1242)))
    assert out["crop_offset"] == (23, 13) and out["uncropped_shape"] == (375, 1242)
    assert out["img_shape"] == out["ori_shape"] == (352, 1216)
    assert np.array_equal(out["img"], img[23:375, 13:1229])
    assert np.array_equal(out["gt_depth_map"], depth[23:375, 13:1229])
    with pytest.raises(ValueError, match="smaller than the crop"):
        crop(dict(img=img[:300], seg_fields=[]))
    with pytest.raises(ValueError, match="size"):
        TRANSFORMS.build(dict(type="KBCrop", size=(352,)))


def garg_mask(full_shape, offset, shape):
    """The Garg crop of a full KITTI image, cut to the KB-cropped window (by hand)."""
    H, W = full_shape
    mask = np.zeros((H, W), bool)
    mask[int(0.40810811 * H):int(0.99189189 * H), int(0.03594771 * W):int(0.96405229 * W)] = True
    top, left = offset
    return mask[top:top + shape[0], left:left + shape[1]]


def per_image(pred, gt, mask, lo, hi):
    """RMSE and abs_rel of one image: gt valid in (lo, hi), prediction clipped to [lo, hi]."""
    valid = mask & (gt > lo) & (gt < hi)
    p, g = np.clip(pred, lo, hi)[valid].astype(np.float64), gt[valid].astype(np.float64)
    return np.sqrt(np.mean((p - g) ** 2)), np.mean(np.abs(p - g) / g)


def test_metric_crops_and_clipping():
    rng = np.random.default_rng(2)
    init_default_scope("mmseg")
    metric = METRICS.build(dict(type="MonoDepthMetric", min_depth_eval=1e-3, max_depth_eval=80,
                                crop_type="kitti_garg_crop"))
    samples, expected = [], []
    for full, offset in (((375, 1242), (23, 13)), ((370, 1224), (18, 4))):
        gt = (rng.uniform(0, 100, (352, 1216)) * (rng.random((352, 1216)) < 0.5)).astype(np.float32)
        pred = rng.uniform(-5, 120, (352, 1216)).astype(np.float32)
        pred[0, :5] = np.inf
        samples.append(dict(pred_depth_map=dict(data=torch.from_numpy(pred)[None]),
                            gt_depth_map=dict(data=torch.from_numpy(gt)[None]),
                            crop_offset=offset, uncropped_shape=full))
        expected.append(per_image(np.nan_to_num(pred, posinf=80), gt,
                                  garg_mask(full, offset, gt.shape), 1e-3, 80))
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    assert result["rmse"] == pytest.approx(np.mean([e[0] for e in expected]), rel=1e-5)
    assert result["abs_rel"] == pytest.approx(np.mean([e[1] for e in expected]), rel=1e-5)
    with pytest.raises(ValueError, match="crop_type"):
        METRICS.build(dict(type="MonoDepthMetric", crop_type="garg"))


# ----------------------------------------------------------------------- end to end
TINY_BACKBONE = dict(resnet_depths=(1, 1, 1), resnet_channels=(16, 32, 64),
                     resnet_stem_channels=8, resnet_num_groups=4, img_size=64, embed_dims=32,
                     num_heads=2)
TINY_HEAD = dict(in_channels=(16, 32, 32, 32), post_process_channels=(16, 32, 32, 32),
                 channels=16, head_channels=8)


def write_tiny_config(tmp, base, data_root):
    path = tmp / ("tiny_" + osp.basename(base))
    path.write_text(f"""
_base_ = {base!r}
model = dict(backbone=dict({', '.join(f'{k}={v!r}' for k, v in TINY_BACKBONE.items())}),
             decode_head=dict({', '.join(f'{k}={v!r}' for k, v in TINY_HEAD.items())}))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root!r}))
env_cfg = dict(cudnn_benchmark=False)
""")
    return str(path)


def release_checkpoint(tmp, name, bias, gain):
    """A release-format (isl-org/DPT) tiny checkpoint, converted with dpt2mmseg.py. The
    output layer is scaled so that the depth maps vary over the evaluated range."""
    release = randomize_(ReleaseDPTHybrid(depths=(1, 1, 1), stage_channels=(16, 32, 64),
                                          stem=8, groups=4, embed=32, num_layers=12, heads=2,
                                          pos_grid=4, features=16, head_channels=8))
    with torch.no_grad():
        release.scratch.output_conv[4].weight.mul_(gain)
        release.scratch.output_conv[4].bias.fill_(bias)
    src, dst = tmp / f"{name}-release.pt", tmp / f"{name}-mmseg.pth"
    torch.save(release.state_dict(), src)
    convert_checkpoint(str(src), str(dst))
    return str(dst)


@pytest.mark.slow
def test_tools_test_on_synthetic_kitti(tmp_path):
    data_root = write_kitti(str(tmp_path / "kitti"))
    config = write_tiny_config(tmp_path, KITTI_CONFIG, data_root)
    checkpoint = release_checkpoint(tmp_path, "kitti", bias=600.0, gain=300.0)
    metrics, predictions, _ = run_test_tool(config, checkpoint, tmp_path, "kitti")
    assert len(predictions) == 3
    rmse, abs_rel = [], []
    for sample in predictions:
        name = osp.relpath(sample["img_path"], osp.join(data_root, "raw"))
        gt_file = osp.join(data_root, "gt", KITTI_DRIVE, "proj_depth/groundtruth/image_02",
                           osp.basename(name))
        full = cv2.imread(gt_file, cv2.IMREAD_UNCHANGED).astype(np.float32) / 256
        H, W = full.shape
        top, left = H - 352, (W - 1216) // 2                  # KB crop, by hand
        gt = full[top:top + 352, left:left + 1216]
        pred = sample["pred_depth_map"]["data"].squeeze(0).numpy()
        assert pred.shape == gt.shape
        assert 0.05 * pred.mean() < pred.std()                  # a varied depth map
        r, a = per_image(pred, gt, garg_mask((H, W), (top, left), gt.shape), 1e-3, 80)
        rmse.append(r)
        abs_rel.append(a)
    assert metrics["rmse"] == pytest.approx(np.mean(rmse), rel=1e-5)
    assert metrics["abs_rel"] == pytest.approx(np.mean(abs_rel), rel=1e-5)


@pytest.mark.slow
def test_tools_test_on_synthetic_nyu(tmp_path):
    data_root = write_nyu(str(tmp_path / "nyu"))
    config = write_tiny_config(tmp_path, NYU_CONFIG, data_root)
    checkpoint = release_checkpoint(tmp_path, "nyu", bias=1500.0, gain=1000.0)
    metrics, predictions, _ = run_test_tool(config, checkpoint, tmp_path, "nyu")
    assert len(predictions) == 2
    rmse, abs_rel = [], []
    for sample in predictions:
        name = osp.splitext(osp.basename(sample["img_path"]))[0]
        gt = cv2.imread(osp.join(data_root, "annotations/test", name + ".png"),
                        cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000
        pred = sample["pred_depth_map"]["data"].squeeze(0).numpy()
        assert pred.shape == gt.shape == (480, 640)
        assert 0.05 * pred.mean() < pred.std()
        mask = np.zeros(gt.shape, bool)
        mask[45:471, 41:601] = True                             # Eigen crop of NYU
        r, a = per_image(pred, gt, mask, 1e-3, 10)
        rmse.append(r)
        abs_rel.append(a)
    assert metrics["rmse"] == pytest.approx(np.mean(rmse), rel=1e-5)
    assert metrics["abs_rel"] == pytest.approx(np.mean(abs_rel), rel=1e-5)
