"""Classification end to end: tools/test.py with a SWAG-derived config on a synthetic
ImageNet-format folder (val/*.JPEG + meta/val.txt) the test writes, through mmpretrain's
ImageNet dataset, SWAG's evaluation pipeline, ImageClassifier and Accuracy; the metric
equals a hand computation from the dumped predictions and the label file. The analysis
tools (get_flops, benchmark, sweep) on the same classifier."""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from harness import ROOT, _photos, run_test_tool

A12 = osp.join(ROOT, "configs/swag/vit-large-p16_swag-pre_expedite-a12-23x23_in1k-512px.py")
SIZES = ((90, 120), (120, 80), (75, 75), (100, 130), (64, 96), (110, 70))


def write_imagenet(root):
    """Real photos (scikit-image) at odd sizes as val/*.JPEG, labels in meta/val.txt."""
    import cv2
    os.makedirs(osp.join(root, "val"))
    os.makedirs(osp.join(root, "meta"))
    photos = _photos()
    names = []
    for i, (h, w) in enumerate(SIZES):
        image = cv2.resize(photos[i % len(photos)], (w, h), interpolation=cv2.INTER_AREA)
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        cv2.imwrite(osp.join(root, "val", name), image[..., ::-1])
        names.append(name)
    write_labels(root, {name: 0 for name in names})
    return names


def write_labels(root, labels):
    with open(osp.join(root, "meta", "val.txt"), "w") as f:
        f.writelines(f"{name} {label}\n" for name, label in labels.items())


def write_tiny_config(tmp_path, data_root):
    """Our ViT-L/16 alpha-12 config, inherited, with a 32-wide 4-layer ViT on 64x64 crops
    (8x8 tokens, clustered to 5x5 after layer 2); the pipeline keeps SWAG's steps."""
    path = tmp_path / "tiny_swag_expedite.py"
    path.write_text(f"""
_base_ = {A12!r}
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=4, num_heads=2,
                            feedforward_channels=64),
                  img_size=64, patch_size=8, cluster_after=2, cluster_grid=(5, 5)),
    head=dict(in_channels=32))
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow',
         color_type='color_ignore_orientation'),
    dict(type='ResizeEdge', scale=64, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
test_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={str(data_root)!r}, pipeline=test_pipeline))
""")
    return str(path)


def predict(cfg, model):
    """The model's scores on the test set, in process: {file name: scores (1000,)}."""
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(cfg.test_dataloader)
    scores = {}
    with torch.no_grad():
        for batch in loader:
            for sample in model.test_step(batch):
                scores[osp.basename(sample.img_path)] = sample.pred_score
    return scores


@pytest.mark.slow
def test_tools_test_top1_top5_equal_hand_computation(tmp_path):
    from expedite_mm.apis.config import build_model, load_config
    data_root = str(tmp_path / "imagenet")
    names = write_imagenet(data_root)
    config = write_tiny_config(tmp_path, data_root)
    cfg = load_config(config)
    model = build_model(cfg)
    assert model.backbone.expedited and model.backbone.reconstruct_after is None
    checkpoint = tmp_path / "tiny_swag.pth"
    torch.save({"meta": {"converter": "swag2mmpretrain"}, "state_dict": model.state_dict()},
               checkpoint)

    # labels: the model's top class for the first half, its 3rd for the next two, its
    # 100th for the rest: top-1 50 %, top-5 83.33 %, neither 0 nor 100
    scores = predict(cfg, model)
    assert sorted(scores) == sorted(names)
    ranks = {name: [0, 0, 0, 2, 2, 99][i] for i, name in enumerate(names)}
    labels = {name: int(scores[name].argsort(descending=True)[ranks[name]]) for name in names}
    write_labels(data_root, labels)

    metrics, predictions, log = run_test_tool(config, str(checkpoint), tmp_path, "swag")
    assert "accuracy/top1" in log                              # printed for the user
    assert len(predictions) == len(names)
    top1 = top5 = 0
    for sample in predictions:
        label = labels[osp.basename(sample["img_path"])]
        assert int(sample["gt_label"]) == label
        order = np.argsort(-np.asarray(sample["pred_score"]), kind="stable")
        top1 += int(order[0] == label)
        top5 += int(label in order[:5])
    assert metrics["accuracy/top1"] == pytest.approx(100 * top1 / len(names), abs=1e-4)
    assert metrics["accuracy/top5"] == pytest.approx(100 * top5 / len(names), abs=1e-4)
    assert metrics["accuracy/top1"] == pytest.approx(50.0, abs=1e-4)
    assert metrics["accuracy/top5"] == pytest.approx(500 / 6, abs=1e-4)


@pytest.mark.slow
def test_flops_benchmark_and_sweep_take_a_classifier(tmp_path):
    """get_flops (logits traced), benchmark (predict and tensor modes) and sweep on the
    tiny classification config: stock and expedited side by side."""
    from harness import command_json, run_command
    data_root = str(tmp_path / "imagenet")
    write_imagenet(data_root)
    config = write_tiny_config(tmp_path, data_root)
    flops = command_json(tmp_path, "flops", config)
    assert flops["shape"] == [64, 64] and 0.5 < flops["ratio_whole"] < 1
    assert flops["expedited"]["clustering_reconstruction_gflops"] > 0
    for mode in ("predict", "tensor"):
        timing = command_json(tmp_path, "benchmark", config, "--repeat", "2", "--warmup", "0",
                              "--no-memory", "--mode", mode)
        assert timing["stock"]["median_ms"] > 0 and timing["expedited"]["median_ms"] > 0
    run_command("sweep", config, "--grid", "3", "4", "--reducer", "Cluster", "EViT",
                "--no-benchmark", "--out-dir", tmp_path / "sweep")
    import csv
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["reducer"] for r in rows] == ["stock", "Cluster", "Cluster", "EViT", "EViT"]
    ratios = {(r["reducer"], r["grid"]): float(r["gflops_ratio"]) for r in rows[1:]}
    assert ratios[("Cluster", "3x3")] < ratios[("Cluster", "4x4")] < 1
    assert ratios[("EViT", "3x3")] < ratios[("EViT", "4x4")] < 1
