"""What the end-to-end tests share: running our tools (in this process through the
``expedite-mm`` command, or tools/test.py in a subprocess), and the
small synthetic datasets (ADE20K and COCO layouts) the tests write themselves.

Imported as a plain module (conftest puts tests/helpers/ on sys.path), like naive.py.
"""
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import warnings

import numpy as np
import torch

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))   # tests/
ROOT = osp.dirname(TESTS)                                   # the checkout
ADE20K_CLASSES = 150
# (H, W) of the synthetic images: small, odd and non-square on purpose
IMAGE_SIZES = ((96, 128), (80, 112), (112, 96))


def run_command(*argv) -> None:
    """``expedite-mm COMMAND ARGS...`` in this process (:func:`expedite_mm.cli.main`: the
    script under tools/ runs as ``__main__``, as from a shell). A usage error or a failure
    exit raises ``SystemExit`` (so does a tool ending in ``sys.exit(main())``, also on
    success: :func:`command_exit_code` reads the status); any other error propagates as
    it is."""
    from expedite_mm.cli import main
    main([str(arg) for arg in argv])


def command_exit_code(*argv) -> int:
    """:func:`run_command`, returning the exit status a shell would see: 0 when the tool
    returns or exits with ``sys.exit(0)`` / ``sys.exit(None)``, the code of an integer
    ``SystemExit`` (argparse's usage error: 2), and 1 for ``sys.exit(message)``, whose
    message goes to stderr as the interpreter would print it. Any other error propagates."""
    try:
        run_command(*argv)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    return 0


def command_json(tmp_path, *argv, flag: str = "--json"):
    """:func:`run_command` with ``flag FILE`` added; returns what the tool wrote to FILE."""
    path = tmp_path / f"command-{len(list(tmp_path.glob('command-*.json')))}.json"
    run_command(*argv, flag, path)
    return json.loads(path.read_text())


def free_port() -> int:
    """A TCP port free right now (two suites on one machine must not share a fixed one)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_test_tool(config, checkpoint, tmp, name, *extra, launcher=None):
    """``tools/test.py`` in a subprocess (``torchrun`` with 2 processes for
    ``launcher='pytorch'``), dumping predictions and metrics.

    Returns ``(metrics, predictions, log)``; fails the test on a non-zero exit.
    """
    out, metrics = tmp / f"{name}.pkl", tmp / f"{name}.json"
    command = [osp.join(ROOT, "tools/test.py"), config, checkpoint, "--work-dir", str(tmp / name),
               "--out", str(out), "--metrics-json", str(metrics), *extra]
    if launcher:
        command = ["-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_port", str(free_port()), *command, "--launcher", launcher]
    threads = "1" if launcher else "2"
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "OMP_NUM_THREADS": threads})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    with open(out, "rb") as f:
        predictions = pickle.load(f)
    return json.loads(metrics.read_text()), predictions, log


def assert_stock_fallback_once(stock, ours, x, why="not fewer tokens"):
    """An input too small to cluster: two calls of the expedited backbone warn exactly
    once (saying ``why``) and return exactly the stock backbone's outputs."""
    from expedite_mm.apis.config import flatten_outputs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            out = ours(x)
            ours(x)
    assert len([w for w in caught if why in str(w.message)]) == 1, [str(w.message) for w in caught]
    with torch.no_grad():
        expected = flatten_outputs(stock(x))
    out = flatten_outputs(out)
    assert len(out) == len(expected) > 0
    assert all(torch.equal(a, b) for a, b in zip(out, expected))


# --------------------------------------------------------------------------- a tiny Segmenter
TINY_SEGMENTER = """
default_scope = 'mmseg'
{imports}crop_size = (96, 96)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(type={backbone!r}, img_size=crop_size, patch_size=8, embed_dims=32,
                  num_layers=4, num_heads=2, mlp_ratio=2, final_norm=True, out_indices=(3,),
                  norm_cfg=dict(type='LN', eps=1e-6){expedite}),
    decode_head=dict(type='SegmenterMaskTransformerHead', in_channels=32, channels=32,
                     num_classes=150, num_layers=1, num_heads=2, embed_dims=32,
                     dropout_ratio=0.0, loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg={test_cfg})
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(128, 96), keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True),
                 dict(type='PackSegInputs')]
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='ADE20KDataset', data_root={data_root!r},
                                    data_prefix=dict(img_path='images/validation',
                                                     seg_map_path='annotations/validation'),
                                    pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_cfg = dict(type='TestLoop')
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
log_level = 'WARNING'
"""


def tiny_segmenter_config(data_root, stock=False, test_cfg="dict(mode='whole')"):
    """A Segmenter config with a 4-layer ViT (patch 8, 96 x 96 crops: 12 x 12 tokens) on an
    ADE20K layout at ``data_root``: ``ExpeditedViT`` (alpha 1, 6 x 6 centres) importing
    expedite_mm, or with ``stock`` mmseg's own ``VisionTransformer`` and no import."""
    return TINY_SEGMENTER.format(
        data_root=str(data_root), test_cfg=test_cfg,
        imports="" if stock else
        "custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)\n",
        backbone="VisionTransformer" if stock else "ExpeditedViT",
        expedite="" if stock else ", cluster_after=1, cluster_grid=(6, 6)")


# --------------------------------------------------------------------------- ADE20K
def _photos():
    from skimage import data
    return [data.astronaut(), data.coffee(), data.chelsea()]


def write_ade20k(root, sizes=IMAGE_SIZES):
    """Real photos (scikit-image) with blocky label maps (0 = ignore, 1..5), in ADE20K's
    layout: images/validation/*.jpg, annotations/validation/*.png."""
    import cv2
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, "images/validation"))
    os.makedirs(osp.join(root, "annotations/validation"))
    for i, ((h, w), photo) in enumerate(zip(sizes, _photos())):
        image = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        cv2.imwrite(osp.join(root, f"images/validation/ADE_val_{i:08d}.jpg"), image[..., ::-1])
        blocks = rng.integers(0, 6, size=(4, 4)).astype(np.uint8)
        label = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(osp.join(root, f"annotations/validation/ADE_val_{i:08d}.png"), label)
    return root


def relabel_from_predictions(predictions, data_root):
    """Label maps = predicted class (+1: ADE20K's zero is "ignore"), with the top-left
    quarter set to another class and a band set to ignore: a random-weight model then
    scores a metric that is neither 0 nor 100."""
    import cv2
    for sample in predictions:
        pred = sample["pred_sem_seg"]["data"].squeeze(0).numpy().astype(np.int64)
        label = pred + 1
        h, w = label.shape
        label[: h // 2, : w // 2] = (label[: h // 2, : w // 2] + 7) % ADE20K_CLASSES + 1
        label[-4:] = 0
        cv2.imwrite(osp.join(data_root, "annotations/validation",
                             osp.basename(sample["seg_map_path"])), label.astype(np.uint8))


def independent_miou(predictions, data_root, num_classes=ADE20K_CLASSES):
    """mIoU (percent) from dumped predictions and the label files, by hand: ADE20K's
    reduce_zero_label (0 -> ignore, k -> k-1), per-class intersection/union accumulated
    over the dataset, mean over the classes that occur in prediction or ground truth."""
    import cv2
    intersection = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for sample in predictions:
        name = osp.basename(sample["seg_map_path"])
        label = cv2.imread(osp.join(data_root, "annotations/validation", name),
                           cv2.IMREAD_UNCHANGED).astype(np.int64)
        label = np.where(label == 0, 255, label - 1)
        pred = sample["pred_sem_seg"]["data"].squeeze(0).numpy()
        assert pred.shape == label.shape
        valid = label != 255
        for c in range(num_classes):
            p, g = (pred == c) & valid, (label == c) & valid
            intersection[c] += (p & g).sum()
            union[c] += (p | g).sum()
    present = union > 0
    return 100 * float(np.mean(intersection[present] / union[present]))


# --------------------------------------------------------------------------- COCO
def write_coco_panoptic(root):
    """val2017/*.jpg, annotations/panoptic_val2017.json + panoptic_val2017/*.png (segment
    id = R + 256 G + 256^2 B, 0 unlabeled) and the matching instances_val2017.json."""
    from mmdet.datasets import CocoPanopticDataset
    return _write_panoptic(root, CocoPanopticDataset.METAINFO, "val2017",
                           "annotations/panoptic_val2017", "annotations/instances_val2017.json",
                           [("sky-other-merged", "stuff"), ("person", "thing"), ("car", "thing")])


def write_ade20k_panoptic(root):
    """ADE20K panoptic in mmdet's layout (its ade20k2coco converter's output):
    images/validation/*.jpg, ade20k_panoptic_val.json + ade20k_panoptic_val/*.png."""
    from mmdet.datasets import ADE20KPanopticDataset
    return _write_panoptic(root, ADE20KPanopticDataset.METAINFO, "images/validation",
                           "ade20k_panoptic_val", None,
                           [("sky", "stuff"), ("person", "thing"), ("car", "thing")])


def _write_panoptic(root, meta, image_dir, panoptic_name, instances_json, regions_classes):
    """Three photos, each with a stuff band on top and two thing boxes (the rest
    unlabeled): ``image_dir``/*.jpg, ``panoptic_name``.json + ``panoptic_name``/*.png (segment
    id = R + 256 G + 256^2 B, 0 unlabeled), and optionally the matching instances json."""
    import cv2

    things = set(meta["thing_classes"])
    categories = [dict(id=i + 1, name=name, supercategory="x", isthing=int(name in things))
                  for i, name in enumerate(meta["classes"])]
    category = {c["name"]: c["id"] for c in categories}
    for name, kind in regions_classes:
        assert (name in things) == (kind == "thing"), name
    for folder in (image_dir, panoptic_name):
        os.makedirs(osp.join(root, folder))
    images, panoptic, instances = [], [], []
    for image_id, ((h, w), photo) in enumerate(zip(IMAGE_SIZES, _photos()), start=1):
        name = f"{image_id:012d}"
        image = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        cv2.imwrite(osp.join(root, image_dir, name + ".jpg"), image[..., ::-1])
        ids = np.zeros((h, w), np.int64)
        boxes = [(0, 0, w, h // 3), (8, h // 3, 40, h - 4), (w // 2, h // 2, w - 6, h - 10)]
        segments = []
        for segment_id, ((cls, _), (x1, y1, x2, y2)) in enumerate(
                zip(regions_classes, boxes), start=image_id * 10):
            ids[y1:y2, x1:x2] = segment_id
            bbox = [x1, y1, x2 - x1, y2 - y1]
            segments.append(dict(id=segment_id, category_id=category[cls], iscrowd=0,
                                 bbox=bbox, area=int((ids == segment_id).sum())))
            if cls in things:
                instances.append(dict(
                    id=segment_id, image_id=image_id, category_id=category[cls], iscrowd=0,
                    bbox=bbox, area=bbox[2] * bbox[3],
                    segmentation=[[x1, y1, x2, y1, x2, y2, x1, y2]]))
        for s in segments:                   # areas after overlaps were painted over
            s["area"] = int((ids == s["id"]).sum())
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        cv2.imwrite(osp.join(root, panoptic_name, name + ".png"), rgb[..., ::-1])
        images.append(dict(id=image_id, file_name=name + ".jpg", height=h, width=w))
        panoptic.append(dict(image_id=image_id, file_name=name + ".png", segments_info=segments))
    with open(osp.join(root, panoptic_name + ".json"), "w") as f:
        json.dump(dict(images=images, annotations=panoptic, categories=categories), f)
    if instances_json:
        with open(osp.join(root, instances_json), "w") as f:
            json.dump(dict(images=images, annotations=instances,
                           categories=[c for c in categories if c["isthing"]]), f)
    return root


# --------------------------------------------------------------------------- YouTube-VIS
# (H, W) of the synthetic videos' frames, and their lengths
VIDEO_SIZES = ((96, 128), (112, 96))
VIDEO_LENGTH = 3


def write_youtube_vis(root, version):
    """Two short videos in the layout mmdet's YouTube-VIS configs read (its
    youtubevis2coco converter's CocoVID json): valid/JPEGImages/<video>/<frame>.jpg and
    annotations/youtube_vis_<version>_valid.json with videos, frames (``frame_id``) and
    per-frame instance annotations (``instance_id``, compressed RLE masks). Each video
    pans across a photo; two instances (boxes) move with it."""
    import cv2
    from mmdet.datasets import YouTubeVISDataset
    from pycocotools import mask as mask_util

    YouTubeVISDataset.set_dataset_classes(version)
    classes = YouTubeVISDataset.METAINFO["classes"]
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(classes)]
    videos, images, annotations = [], [], []
    for video_id, ((h, w), photo) in enumerate(zip(VIDEO_SIZES, _photos()), start=1):
        name = f"{video_id:010d}"
        os.makedirs(osp.join(root, "valid/JPEGImages", name))
        videos.append(dict(id=video_id, name=name, height=h, width=w))
        big = cv2.resize(photo, (w + 8 * VIDEO_LENGTH, h), interpolation=cv2.INTER_AREA)
        for frame_id in range(VIDEO_LENGTH):
            image_id = video_id * 100 + frame_id
            file_name = f"{name}/{frame_id:05d}.jpg"
            frame = np.ascontiguousarray(big[:, 8 * frame_id:8 * frame_id + w])
            cv2.imwrite(osp.join(root, "valid/JPEGImages", file_name), frame[..., ::-1])
            images.append(dict(id=image_id, video_id=video_id, file_name=file_name,
                               height=h, width=w, frame_id=frame_id))
            for instance, (cls, (x1, y1, x2, y2)) in enumerate(
                    [(0, (10, 20, 50, h - 10)), (len(classes) - 1, (w // 2, 8, w - 4, h // 2))]):
                x1, x2 = x1 + 2 * frame_id, x2 + 2 * frame_id
                mask = np.zeros((h, w), np.uint8, order="F")
                mask[y1:y2, x1:x2] = 1
                rle = mask_util.encode(mask)
                rle["counts"] = rle["counts"].decode()
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id, video_id=video_id,
                    category_id=cls + 1, instance_id=video_id * 10 + instance, iscrowd=0,
                    bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                    segmentation=rle))
    os.makedirs(osp.join(root, "annotations"))
    with open(osp.join(root, f"annotations/youtube_vis_{version}_valid.json"), "w") as f:
        json.dump(dict(categories=categories, videos=videos, images=images,
                       annotations=annotations), f)
    return root
