"""The autotuner on tiny models: the search, the FLOP model, the resume cache, the written
config, the error cases, and the validation against labels. The engine is the package's
(``expedite_mm.analysis.autotune``); the command line (its parser, exit codes and one-line
errors) is ``tools/analysis/autotune.py``'s, run in this process as ``expedite-mm
autotune`` (:func:`harness.command_exit_code`) where a test patches the engine or reads
stderr through capsys, else in its own."""
import csv
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from expedite_mm.analysis import autotune
from harness import (ROOT, command_exit_code, relabel_from_predictions, run_test_tool,
                     tiny_segmenter_config, write_ade20k)

# a stock mmseg Swin (stage 2: 6 blocks, one 6 x 6 window at 96 x 96) with an FCN head
TINY_SWIN = """
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True, size=(96, 96)),
    backbone=dict(type='SwinTransformer', embed_dims=16, depths=(2, 2, 6, 2),
                  num_heads=(1, 2, 2, 4), window_size=6, mlp_ratio=2, strides=(4, 2, 2, 2),
                  out_indices=(3,), patch_norm=True),
    decode_head=dict(type='FCNHead', in_channels=128, in_index=0, channels=16, num_convs=1,
                     num_classes=5, loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='slide', crop_size=(96, 96), stride=(96, 96)))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 96),
                 keep_ratio=True), dict(type='PackSegInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""
# a Segmenter on DPT's hybrid ViT (a small BiT ResNet, then 4 ViT layers on its stride-16
# map: 8 x 8 tokens at 128 x 128)
TINY_HYBRID = """
default_scope = 'mmseg'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True, size=(128, 128)),
    backbone=dict(type='HybridViT', resnet_depths=(1, 1, 1), resnet_channels=(16, 32, 64),
                  resnet_stem_channels=8, resnet_num_groups=4, resnet_out_indices=(),
                  img_size=128, embed_dims=32, num_layers=4, num_heads=2, mlp_ratio=2,
                  out_indices=(3,), final_norm=True),
    decode_head=dict(type='SegmenterMaskTransformerHead', in_channels=32, channels=32,
                     num_classes=5, num_layers=1, num_heads=2, embed_dims=32,
                     dropout_ratio=0.0, loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128)),
                 dict(type='PackSegInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""
# a SWAG-style mmpretrain classifier, tiny: 8 x 8 tokens at 64 x 64
TINY_CLASSIFIER = """
_base_ = {swag!r}
model = dict(backbone=dict(_delete_=True, type='VisionTransformer', out_type='cls_token',
                           arch=dict(embed_dims=32, num_layers=4, num_heads=2,
                                     feedforward_channels=64), img_size=64, patch_size=8),
             head=dict(in_channels=32, num_classes=10))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='ResizeEdge', scale=64, edge='short'),
                 dict(type='CenterCrop', crop_size=64), dict(type='PackInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""
# a stock mmseg BEiT (relative position bias per layer) in the Swin's segmentor, on whole
# 96 x 96 images (its bias is for one token grid): 6 x 6 tokens
TINY_BEIT = """
_base_ = './tiny_swin.py'
model = dict(backbone=dict(_delete_=True, type='BEiT', img_size=(96, 96), patch_size=16,
                           embed_dims=32, num_layers=4, num_heads=2, mlp_ratio=2,
                           out_indices=(3,), qv_bias=True, init_values=0.1),
             decode_head=dict(in_channels=32), test_cfg=dict(_delete_=True, mode='whole'))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96)),
                 dict(type='PackSegInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""
# a stock mmseg SegFormer encoder (MiT; stage 2: 5 blocks on a 6 x 6 map at 96 x 96) with
# SegFormer's head, in the Swin's segmentor
TINY_SEGFORMER = """
_base_ = './tiny_swin.py'
model = dict(backbone=dict(_delete_=True, type='MixVisionTransformer', embed_dims=16,
                           num_layers=[1, 1, 5, 1], num_heads=[1, 2, 2, 4]),
             decode_head=dict(_delete_=True, type='SegformerHead', in_channels=[16, 32, 32, 64],
                              in_index=[0, 1, 2, 3], channels=16, num_classes=5,
                              loss_decode=dict(type='CrossEntropyLoss')))
"""
# SAM's image encoder, tiny: windows of 6, global attention in layers 3 and 6
TINY_SAM = """
default_scope = 'mmseg'
model = dict(
    type='SAMImageEncoder',
    backbone=dict(type='ViTSAM', arch=dict(embed_dims=32, num_layers=6, num_heads=2,
                  feedforward_channels=64, global_attn_indexes=[2, 5]), img_size=160,
                  patch_size=16, out_channels=16, window_size=6),
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=160))
"""


def _photos():
    from skimage import data
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny stock configs, a random checkpoint of the ViT one, a folder of 4 photos."""
    import cv2

    from expedite_mm.apis.config import as_expedited, build_model, load_config
    root = tmp_path_factory.mktemp("autotune")
    config = root / "tiny_seg.py"
    # a stock mmseg config (VisionTransformer + Segmenter head): the tool maps it to ours
    config.write_text(tiny_segmenter_config(root / "ade", stock=True, test_cfg=(
        "dict(mode='slide', crop_size=crop_size, stride=crop_size)")))
    (root / "tiny_swin.py").write_text(TINY_SWIN)
    (root / "tiny_sam.py").write_text(TINY_SAM)
    (root / "tiny_hybrid.py").write_text(TINY_HYBRID)
    (root / "tiny_beit.py").write_text(TINY_BEIT)
    (root / "tiny_segformer.py").write_text(TINY_SEGFORMER)
    (root / "tiny_classifier.py").write_text(TINY_CLASSIFIER.format(swag=osp.join(
        ROOT, "configs/swag/vit-large-p16_swag-pre_3rdparty_in1k-512px.py")))
    torch.manual_seed(0)
    cfg, _ = as_expedited(load_config(str(config)))
    checkpoint = root / "tiny.pth"
    torch.save({"state_dict": build_model(cfg).state_dict(), "meta": {}}, checkpoint)
    images = root / "images"
    images.mkdir()
    for i, (photo, (h, w)) in enumerate(zip(_photos(), [(96, 128), (120, 96), (96, 96),
                                                         (100, 140)])):
        cv2.imwrite(str(images / f"photo{i}.jpg"),
                    cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)[..., ::-1])
    return {"root": root, "config": str(config), "checkpoint": str(checkpoint),
            "images": str(images), "swin": str(root / "tiny_swin.py"),
            "sam": str(root / "tiny_sam.py"), "hybrid": str(root / "tiny_hybrid.py"),
            "beit": str(root / "tiny_beit.py"), "segformer": str(root / "tiny_segformer.py"),
            "classifier": str(root / "tiny_classifier.py")}


def argv(tiny, work, *extra):
    return [tiny["config"], tiny["checkpoint"], "--images", tiny["images"], "--work-dir",
            str(work), "--grid-ratios", "0.3", "0.5", "0.7", "--first-images", "2", "--eta",
            "2", "--quiet", *extra]


def run_tool(args, entry=("tools/analysis/autotune.py",), timeout=900):
    """The command line in its own process (``entry``: the script, or the ``expedite-mm``
    command's module and sub-command)."""
    script = [osp.join(ROOT, entry[0])] if entry[0].endswith(".py") else list(entry)
    return subprocess.run([sys.executable, *script, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory):
    """One run of the script at a whole-model GFLOPs budget of 0.75: (work dir, argv, exit
    code)."""
    work = tmp_path_factory.mktemp("tuned") / "work"
    args = argv(tiny, work, "--budget-gflops", "0.75")
    return work, args, run_tool(args).returncode


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def miou_by_hand(pairs):
    """mIoU (percent) of predicted maps against reference maps, summed over the images,
    averaged over the classes present in either (IoUMetric's definition, by hand)."""
    inter, union = {}, {}
    for pred, ref in pairs:
        for c in set(np.unique(pred)) | set(np.unique(ref)):
            p, r = pred == c, ref == c
            inter[c] = inter.get(c, 0) + int((p & r).sum())
            union[c] = union.get(c, 0) + int((p | r).sum())
    return 100 * float(np.mean([inter[c] / union[c] for c in union]))


def predictions(config, checkpoint, images):
    """Class maps of a config on image files, through mmseg's own inference API."""
    from mmseg.apis import inference_model, init_model

    from expedite_mm.apis.checkpoint import checkpoint_policy
    with checkpoint_policy():
        model = init_model(config, checkpoint, device="cpu")
    return [inference_model(model, path).pred_sem_seg.data[0].numpy() for path in images]


def tuner_for(config, checkpoint="unused.pth", **overrides):
    from expedite_mm.apis.config import as_expedited, build_model, load_config
    cfg, _ = as_expedited(load_config(config))
    options = autotune.AutotuneOptions(**{
        "config": config, "checkpoint": checkpoint, "grid_ratios": [0.5, 0.8],
        "keep_rates": [], "tome_r": [], **overrides})
    stock = build_model(autotune.apply_setting(cfg, autotune.STOCK))
    tuner = autotune.Tuner(options, cfg, stock, [])
    return tuner, autotune.search_space(options, cfg, tuner.structure)


# --------------------------------------------------------------------------- end to end
def test_end_to_end_meets_budget_on_pareto_front_and_writes_a_working_config(tiny, tuned,
                                                                               tmp_path):
    from mmengine.config import Config

    from expedite_mm.apis.config import build_model, default_input_shape
    from expedite_mm.analysis.flops import model_flops
    work, _, code = tuned
    assert code == 0
    rows = read_csv(work / "autotune.csv")
    summary = json.loads((work / "autotune.json").read_text())
    chosen = [r for r in rows if r["chosen"] == "1"]
    assert len(chosen) == 1
    chosen = chosen[0]
    ratio = float(chosen["gflops_ratio"])
    assert ratio <= 0.75
    assert chosen["images"] == "4" and chosen["agreement_measure"] == "mIoU"
    # 3 alphas x 3 grids x 2 placements, and the stock row
    assert len(rows) == 1 + 18 and rows[0]["family"] == "stock"
    # the Pareto front, recomputed here over everything measured on all 4 images
    full = [r for r in rows if r["images"] == "4"]
    points = [(float(r["gflops_ratio"]), float(r["agreement"])) for r in full]
    front = [r for r, (c, a) in zip(full, points)
             if not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points)]
    assert chosen in front
    assert front == [r for r in rows if r["pareto"] == "1"]
    # the best agreement within the budget among those measured on every image
    within = [float(r["agreement"]) for r in full[1:] if float(r["gflops_ratio"]) <= 0.75]
    assert float(chosen["agreement"]) == max(within)
    # statuses: over-budget rows are over it, dominated ones have a feasible upgrade
    feasible = {(r["placement"], r["alpha"], r["grid"]) for r in rows[1:]
                if float(r["gflops_ratio"]) <= 0.75}
    for r in rows[1:]:
        assert r["status"].split(" ")[0] in ("chosen", "finalist", "stopped", "over",
                                             "dominated"), r["status"]
        over = float(r["gflops_ratio"]) > 0.75
        assert (r["status"] == "over budget") == over
        upgrades = {(r["placement"], str(int(r["alpha"]) + 1), r["grid"])} | {
            (r["placement"], r["alpha"], g) for g in ("0.3", "0.5", "0.7")
            if float(g) > float(r["grid"])}
        if not over:
            nearest = sorted(u for u in upgrades if u[1] == r["alpha"])[:1] + \
                [u for u in upgrades if u[1] != r["alpha"]]
            assert r["status"].startswith("dominated") == bool(set(nearest) & feasible), r
    # the written config: the user's config as _base_, builds, counts the CSV's ratio
    text = (work / "autotune_config.py").read_text()
    assert f"_base_ = {tiny['config']!r}" in text
    cfg = Config.fromfile(str(work / "autotune_config.py"))
    backbone = cfg.model.backbone
    assert backbone.type == "ExpeditedViT" and backbone.cluster_after == int(chosen["alpha"])
    assert tuple(backbone.cluster_grid) == tuple(int(v) for v in chosen["grid_hw"].split("x"))
    assert backbone.reconstruct_placement == chosen["placement"]
    assert backbone.embed_dims == 32 and backbone.num_layers == 4      # stock keys kept
    shape = default_input_shape(cfg)
    stock = build_model(autotune.apply_setting(cfg, autotune.STOCK))
    counted = model_flops(build_model(cfg), shape).whole / model_flops(stock, shape).whole
    assert counted == pytest.approx(ratio, rel=1e-6)
    assert summary["verified"]["gflops_ratio"] == pytest.approx(ratio, rel=1e-6)
    # the agreement of the chosen setting, recomputed with mmseg's inference API + by hand
    files = sorted(osp.join(tiny["images"], f) for f in os.listdir(tiny["images"]))
    stock_config = tmp_path / "stock.py"
    stock_config.write_text(f"_base_ = {tiny['config']!r}\n"
                            "custom_imports = dict(imports=['expedite_mm'])\n")
    ref = predictions(str(stock_config), tiny["checkpoint"], files)
    ours = predictions(str(work / "autotune_config.py"), tiny["checkpoint"], files)
    assert miou_by_hand(list(zip(ours, ref))) == pytest.approx(float(chosen["agreement"]),
                                                               abs=1e-4)
    with open(work / "autotune.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # written as any file (the umask's permissions), no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    for name in ("autotune.csv", "autotune.png", "autotune.json", "autotune_config.py"):
        assert os.stat(work / name).st_mode & 0o777 == 0o666 & ~umask, name
    assert not glob.glob(str(work / ".tmp-*"))


def test_rerun_repeats_nothing(tuned):
    work, args, code = tuned
    assert code == 0
    first = json.loads((work / "autotune.json").read_text())
    assert first["forwards"] > 0
    assert run_tool(args).returncode == 0
    again = json.loads((work / "autotune.json").read_text())
    assert again["forwards"] == 0 and again["flop_counts"] == 1     # the verifying count only
    assert again["chosen"] == first["chosen"] and again["agreement"] == first["agreement"]


def test_expedite_for_a_budget_writes_the_tuners_choice_on_the_stock_name(tiny, tuned,
                                                                           tmp_path):
    """``expedite-mm expedite --budget-gflops``'s engine: the tuner run on a file that
    inherits the stock config, its config rebased on the stock config's own name. With the
    tuned run's cache (the same model and images) nothing is measured again."""
    import shutil

    from expedite_mm.analysis.autotune_space import AutotuneOptions
    from expedite_mm.apis.config import load_config
    work, _, code = tuned
    assert code == 0
    shutil.copytree(work, tmp_path / "work")
    options = AutotuneOptions(config="replaced", checkpoint=tiny["checkpoint"],
                              budget_gflops=0.75, images=tiny["images"],
                              work_dir=str(tmp_path / "work"), grid_ratios=[0.3, 0.5, 0.7],
                              first_images=2, eta=2, quiet=True)
    text = autotune.expedite_for_budget(tiny["config"], options)
    assert f"_base_ = {tiny['config']!r}" in text.splitlines()
    summary = json.loads((tmp_path / "work" / "autotune.json").read_text())
    assert summary["forwards"] == 0                                   # all from the cache
    assert summary["chosen"] == json.loads((work / "autotune.json").read_text())["chosen"]
    (tmp_path / "expedited.py").write_text(text)
    assert load_config(str(tmp_path / "expedited.py")).model == \
        load_config(str(work / "autotune_config.py")).model


def test_an_interrupted_run_resumes_where_it_stopped(tiny, tuned, tmp_path, monkeypatch):
    """Interrupted after 3 forwards, then resumed (every candidate run in full here, so
    that each forward is one stored measurement): nothing is measured twice, and the runs
    together made one forward per image for the stock model plus one per candidate and
    image it was measured on; the result is the replaying run's."""
    work = tmp_path / "work"
    args = argv(tiny, work, "--budget-gflops", "0.75", "--no-stock-reuse")
    original_run, original_put = autotune.Tuner._run, autotune.Cache.put
    calls, stored = [], []

    def interrupting(self, model, image):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(image.name)
        return original_run(self, model, image)

    def recording(self, key, value):
        stored.append(key)
        return original_put(self, key, value)
    monkeypatch.setattr(autotune.Tuner, "_run", interrupting)
    monkeypatch.setattr(autotune.Cache, "put", recording)
    assert command_exit_code("autotune", *args) == 130
    assert osp.exists(work / "cache.sqlite") and not osp.exists(work / "autotune.csv")
    before = set(stored)
    stored.clear()
    monkeypatch.setattr(autotune.Tuner, "_run", original_run)
    assert command_exit_code("autotune", *args) == 0
    assert not before & set(stored)
    resumed = json.loads((work / "autotune.json").read_text())
    rows = read_csv(work / "autotune.csv")
    measured = sum(int(r["images"]) for r in rows[1:] if r["images"])
    assert 3 + resumed["forwards"] == 4 + measured
    replayed = json.loads((tuned[0] / "autotune.json").read_text())
    assert resumed["chosen"] == replayed["chosen"]
    assert resumed["agreement"] == replayed["agreement"]
    # the same table, but for how the FLOPs were had (a count at the smallest alpha
    # without stubs, instead of one stubbed count per chain)
    strip = lambda rows: [dict(r, flops="") for r in rows]  # noqa: E731
    assert strip(read_csv(work / "autotune.csv")) == strip(read_csv(tuned[0] / "autotune.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["swin", "hybrid", "beit", "segformer", "classifier"])
def test_other_backbones_end_to_end(tiny, tmp_path, capsys, which):
    """A stock Swin config (alpha in stage 2, the clustered window size), a Segmenter on
    DPT's hybrid ViT (the ResNet before the ViT; replaying the stock layers gives the full
    model's prediction), BEiT (its position bias read for the centres), SegFormer (the
    centres of MiT's stage 2), and a
    classification ViT with EViT's keep rate and ToMe's r as families: the written config
    is ours, within the budget."""
    from mmengine.config import Config

    from expedite_mm.apis.config import as_expedited, build_model, load_config
    torch.manual_seed(0)
    cfg, _ = as_expedited(load_config(tiny[which]))
    checkpoint = tmp_path / "weights.pth"
    torch.save({"state_dict": build_model(cfg).state_dict()}, checkpoint)
    work = tmp_path / "work"
    families = "clustering,evit,tome" if which == "classifier" else "clustering"
    code = command_exit_code("autotune", tiny[which], str(checkpoint), "--images",
                             tiny["images"], "--work-dir", str(work), "--budget-gflops", "0.9",
                             "--quiet", "--grid-ratios", "0.5", "0.7", "--first-images", "2",
                             "--families", families, "--keep-rates", "0.5", "0.7",
                             "--tome-r", "8", "16")
    assert code == 0
    assert "note:" not in capsys.readouterr().err
    rows = read_csv(work / "autotune.csv")
    chosen = next(r for r in rows if r["chosen"] == "1")
    assert float(chosen["gflops_ratio"]) <= 0.9
    backbone = Config.fromfile(str(work / "autotune_config.py")).model.backbone
    if which == "classifier":
        assert rows[1]["agreement_measure"] == "" and chosen["agreement_measure"] == "top-1"
        assert {(r["family"], r["keep_rate"] or r["r"]) for r in rows[1:]
                if r["family"] != "clustering"} == {("evit", "0.5"), ("evit", "0.7"),
                                                    ("tome", "8"), ("tome", "16")}
        assert backbone.type == "ExpeditedVisionTransformer"
        if chosen["family"] == "clustering":
            assert backbone.layerwise_reducer is None and backbone.cluster_after == int(chosen["alpha"])
        else:
            assert backbone.get("cluster_after") is None
            assert backbone.layerwise_reducer.type == {"evit": "EViT", "tome": "ToMe"}[chosen["family"]]
        return
    assert backbone.cluster_after == int(chosen["alpha"])
    if which == "swin":
        assert {r["window"] for r in rows[1:]} == {"3", "4"}
        assert {r["alpha"] for r in rows[1:]} == {"1", "2", "3", "4", "5"}
        assert backbone.type == "ExpeditedSwin"
        assert backbone.clustered_window_size == int(chosen["window"])
    else:
        assert {r["grid_hw"] for r in rows[1:]} == ({"4x4", "6x6"} if which == "hybrid"
                                                    else {"3x3", "4x4"})
        assert backbone.type == {"hybrid": "ExpeditedHybridViT", "beit": "ExpeditedBEiT",
                                 "segformer": "ExpeditedMiT"}[which]
        assert tuple(backbone.cluster_grid) == tuple(int(v) for v in chosen["grid_hw"].split("x"))


def test_a_pyramid_stage_is_read_for_the_search():
    """PVT v1 (mmdet): the blocks of the clustered stage are named past its position
    embedding, and the stage's token map is its patch embeddings' output at the size;
    Twins keeps its stages in lists of its own."""
    import types

    from mmengine.config import Config

    from expedite_mm.apis.expedite import build_backbone
    cfg = Config(dict(model=dict(backbone=dict(type="ExpeditedPVT", stage=2))))
    backbone = build_backbone(dict(type="ExpeditedPVT", embed_dims=8, num_layers=[1, 1, 3, 1],
                                   num_heads=[1, 1, 2, 2], pretrain_img_size=64), "mmdet")
    structure = autotune.probe_structure(cfg, types.SimpleNamespace(backbone=backbone),
                                         (100, 150))
    assert structure.kind == "pyramid" and structure.depth == 3
    assert structure.layer_names == [f"backbone.layers.2.1.{i}" for i in (1, 2, 3)]
    assert structure.token_grid == (6, 9)        # 100 // 4 // 2 // 2, 150 // 4 // 2 // 2
    # Twins SVT (mmseg): blocks in layers[i], embeddings in patch_embeds, adaptive padding
    cfg = Config(dict(model=dict(backbone=dict(type="ExpeditedSVT", stage=2))))
    backbone = build_backbone(dict(type="ExpeditedSVT", embed_dims=[8, 8, 16, 16],
                                   num_heads=[1, 1, 2, 2], depths=[1, 1, 2, 1],
                                   sr_ratios=[8, 4, 2, 1], windiow_sizes=[4] * 4,
                                   mlp_ratios=[2] * 4), "mmseg")
    structure = autotune.probe_structure(cfg, types.SimpleNamespace(backbone=backbone),
                                         (100, 150))
    assert structure.layer_names == ["backbone.layers.2.0", "backbone.layers.2.1"]
    assert structure.token_grid == (7, 10)       # ceil(100 / 16), ceil(150 / 16)
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 100, 150))[2].shape[2:] == (7, 10)


def test_hybrid_with_resnet_taps_offers_the_backbone_placement_only(tiny, tmp_path):
    """DPT's hybrid ViT returning ResNet stages too (its head reads several taps at full
    resolution) turns the logits placement down; without taps it takes both."""
    from expedite_mm.apis.config import as_expedited, build_model, load_config
    taps = tmp_path / "taps.py"
    taps.write_text(f"_base_ = {tiny['hybrid']!r}\n"
                    "model = dict(backbone=dict(resnet_out_indices=(0, 1)))\n")
    for config, placements in ((tiny["hybrid"], {"logits", "backbone"}),
                               (str(taps), {"backbone"})):
        cfg, _ = as_expedited(load_config(config))
        structure = autotune.probe_structure(cfg, build_model(cfg), (128, 128))
        options = autotune.AutotuneOptions(config, "unused.pth", grid_ratios=[0.5],
                                           keep_rates=[], tome_r=[])
        settings = autotune.search_space(options, cfg, structure)
        assert {s.placement for s in settings} == placements


@pytest.mark.parametrize("which,families,alphas,ratios", [
    ("config", ["clustering", "tome"], None, [0.5, 0.8]),
    ("swin", ["clustering", "avgpool"], [1, 3, 5], [0.5]),
    ("sam", ["clustering"], None, [0.5, 0.8]),
    ("hybrid", ["clustering", "evit"], None, [0.5]),
    ("beit", ["clustering", "avgpool"], None, [0.5]),
    ("segformer", ["clustering", "avgpool"], None, [0.5, 0.7])])
def test_flop_model_matches_real_counts(tiny, which, families, alphas, ratios):
    """Every setting's FLOPs as the tool derives them from one count per chain (plain ViTs:
    a stubbed count of the clustered layers; others: a count at the smallest alpha) equal
    the setting's own fvcore count, for both placements, baseline families, a windowed
    backbone, SAM's encoder (windowed and global layers), DPT's hybrid ViT, BEiT and
    SegFormer's MiT (one stage of a pyramid)."""
    tuner, settings = tuner_for(tiny[which], families=families, alphas=alphas,
                                grid_ratios=ratios)
    tuner.prepare_chains(settings)
    derived = {s: tuner.flops(s) for s in settings}
    # the stock model, and one stubbed count per chain (ViT) or two (smallest and largest
    # alpha)
    chains = {s.chain for s in settings}
    plain = which in ("config", "hybrid")      # BEiT: its layers' cost is partly outside
    assert tuner.flop_counts == 1 + len(chains) * (1 if plain else 2)
    if which == "hybrid":               # no ResNet taps: the head reads one map
        assert {s.placement for s in settings} == {"logits", "backbone"}
        assert tuner.structure.token_grid == (8, 8)
    if which == "config":
        assert {s.placement for s in settings} == {"logits", "backbone"}
        assert len(settings) == 3 * 2 * 2 + 3 * 2
    elif which == "swin":
        assert {s.window for s in settings} == {3} and tuner.structure.window_size == 6
    elif which == "sam":
        assert tuner.structure.window_size == 6 and tuner.structure.depth == 6
    elif which == "beit":               # avgpool keeps a grid: BEiT reads its bias on it
        assert {s.family for s in settings} == {"clustering", "avgpool"}
        assert tuner.structure.token_grid == (6, 6)
    elif which == "segformer":          # stage 2 of 96 x 96: a 6 x 6 map, 3x3 and 4x4 centres
        assert tuner.structure.token_grid == (6, 6) and tuner.structure.depth == 5
        assert {(s.alpha, s.grid) for s in settings} == {(a, g) for a in range(1, 5)
                                                         for g in (0.5, 0.7)}
        assert {s.placement for s in settings} == {""}
    for s in settings:
        if derived[s]["flops"] == "counted":          # a chain's own count
            assert not plain
            assert s.alpha in (tuner.chain_alphas[s.chain][0], tuner.chain_alphas[s.chain][-1])
            continue
        counted = tuner._count(s)
        assert derived[s]["gflops"] * 1e9 == pytest.approx(counted["whole"], abs=0.5), s
        assert derived[s]["backbone_gflops"] * 1e9 == pytest.approx(counted["backbone"], abs=0.5)
    if which == "config":   # the logits placement runs the head on the centres: cheaper
        a = autotune.Setting("clustering", "logits", 2, 0.5)
        b = autotune.Setting("clustering", "backbone", 2, 0.5)
        assert derived[a]["gflops"] < derived[b]["gflops"]


# --------------------------------------------------------------------------- errors
def _error_case(tiny, tmp_path, case):
    """(argv, exit code, what the message must say) of one bad input."""
    images, config, checkpoint = tiny["images"], tiny["config"], tiny["checkpoint"]
    extra, code = ["--budget-gflops", "0.7"], 2
    if case == "empty":
        images = tmp_path / "empty"
        images.mkdir()
        (images / "notes.txt").write_text("no images here")
        match = "no images in it"
    elif case == "unreadable":
        images = tmp_path / "bad"
        images.mkdir()
        (images / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        match = "cannot read"
    elif case == "budget":
        extra, code = ["--budget-gflops", "0.05"], 3
        match = "no setting meets --budget-gflops 0.05: the cheapest, clustering a1 grid0.3 logits"
    elif case == "backbone":
        config = tmp_path / "resnet.py"
        config.write_text(f"_base_ = {tiny['config']!r}\n"
                          "model = dict(backbone=dict(_delete_=True, type='ResNetV1c', depth=18))\n")
        match = "'ResNetV1c' (mmseg) in a mmseg config cannot be expedited"
    elif case == "checkpoint":
        checkpoint = str(tmp_path / "missing.pth")
        match = "no such file"
    elif case == "dataset":                 # neither --images nor the config's test set
        config = tmp_path / "elsewhere.py"
        config.write_text(f"_base_ = {tiny['config']!r}\ntest_dataloader = dict(dataset=dict("
                          f"data_root={str(tmp_path / 'nowhere')!r}))\n")
        images = None
        match = "cannot load the config's test set"
    elif case == "family":
        config = tiny["swin"]
        extra += ["--families", "clustering,evit"]
        match = "--families evit: not available for ExpeditedSwin"
    else:
        extra += ["--alphas", "9"]
        match = "cluster_after must be < 4"
    return [str(config), str(checkpoint), *(["--images", str(images)] if images else []),
            "--work-dir", str(tmp_path / "work"), "--grid-ratios", "0.3", "0.5", *extra], code, match


@pytest.mark.parametrize("case", ["empty", "unreadable", "budget", "backbone", "checkpoint",
                                  "dataset", "family", "alphas"])
def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, capsys, case):
    args, code, match = _error_case(tiny, tmp_path, case)
    assert command_exit_code("autotune", *args, "--quiet") == code
    lines = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in lines if "Warning" not in line and "warnings.warn" not in line
             and "Loads checkpoint" not in line]
    assert len(lines) == 1 and lines[0].startswith("autotune.py: error:"), lines
    assert match in lines[0]
    assert not osp.exists(tmp_path / "work")


@pytest.mark.parametrize("entry", [("tools/analysis/autotune.py",),
                                   ("-m", "expedite_mm.cli", "autotune")])
def test_bad_input_from_the_command_line(tiny, tmp_path, entry):
    """The script itself, and as ``expedite-mm autotune``: exit code, one line on stderr,
    no traceback, nothing written."""
    args, code, match = _error_case(tiny, tmp_path, "budget")
    result = run_tool([*args, "--quiet"], entry, timeout=300)
    lines = [line for line in result.stderr.strip().splitlines() if "Loads checkpoint" not in line]
    assert result.returncode == code
    assert lines == [lines[0]] and match in lines[0] and "Traceback" not in result.stderr
    assert not osp.exists(tmp_path / "work")


# --------------------------------------------------------------------------- validation
@pytest.mark.slow
def test_validation_ranks_settings_and_matches_tools_test(tiny, tmp_path):
    """--validate on a labelled synthetic ADE20K set: >= 12 settings with agreement and
    true mIoU; per budget the pick and the oracle; the true mIoU of a setting equals
    tools/test.py's on its config (an independent path)."""
    data_root = tiny["root"] / "ade"
    if not data_root.exists():
        write_ade20k(str(data_root))
        # labels = the stock prediction, a quarter of each image relabelled: a true mIoU
        # neither 0 nor 100 for the random-weight model
        files = sorted(glob.glob(str(data_root / "images/validation/*.jpg")))
        stock_config = tmp_path / "stock.py"
        stock_config.write_text(f"_base_ = {tiny['config']!r}\n"
                                "custom_imports = dict(imports=['expedite_mm'])\n")
        maps = predictions(str(stock_config), tiny["checkpoint"], files)
        relabel_from_predictions(
            [{"pred_sem_seg": {"data": torch.from_numpy(m)[None]},
              "seg_map_path": f.replace("images", "annotations").replace(".jpg", ".png")}
             for m, f in zip(maps, files)], str(data_root))
    work = tmp_path / "work"
    code = command_exit_code("autotune", tiny["config"], tiny["checkpoint"], "--val", "3",
                             "--work-dir", str(work), "--validate", "--validate-budgets",
                             "0.6", "0.9", "--grid-ratios", "0.3", "0.5", "0.7", "0.9",
                             "--quiet", "--first-images", "1", "--budget-gflops", "0.7")
    assert code == 0
    summary = json.loads((work / "autotune.json").read_text())
    assert summary["budget"] == 0.7 and summary["verified"]["cost"] <= 0.7   # the user's
    report = json.loads((work / "validation.json").read_text())
    rows = read_csv(work / "validation.csv")
    with open(work / "validation.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert report["settings"] == len(rows) >= 12
    agreement = [float(r["agreement"]) for r in rows]
    truth = [float(r["true_metric"]) for r in rows]
    assert report["spearman_rho"] == pytest.approx(autotune.spearman(agreement, truth))
    assert -1 <= report["spearman_rho"] <= 1
    assert [b["budget"] for b in report["budgets"]] == [0.6, 0.9]
    for b in report["budgets"]:
        within = [r for r in rows if float(r["cost"]) <= b["budget"]]
        assert b["oracle_true_metric"] == pytest.approx(max(float(r["true_metric"]) for r in within))
        assert b["pick_cost"] <= b["budget"]
        assert b["gap"] == pytest.approx(b["oracle_true_metric"] - b["pick_true_metric"])
    # the true mIoU of one setting through tools/test.py
    row = rows[len(rows) // 2]
    tuner, settings = tuner_for(tiny["config"], grid_ratios=[0.3, 0.5, 0.7, 0.9])
    setting = next(s for s in settings if s.label() == row["setting"])
    path = tmp_path / "one.py"
    autotune.apply_setting(tuner.cfg, setting).dump(str(path))
    metrics, _, _ = run_test_tool(str(path), tiny["checkpoint"], tmp_path, "one")
    assert float(row["true_metric"]) == pytest.approx(metrics["mIoU"], abs=1e-3)


# --------------------------------------------------------------------------- pieces
def test_validate_keeps_the_given_budget_or_takes_the_largest_validated_one(monkeypatch):
    """What ``expedite-mm autotune`` hands the engine (its ``run``, replaced here by one
    that records the options)."""
    given = []

    def recording(options):
        given.append(options)
        return 0
    monkeypatch.setattr(autotune, "run", recording)
    base = ["c.py", "w.pth", "--val", "4", "--validate", "--validate-budgets", "0.6", "0.8"]
    assert command_exit_code("autotune", *base) == 0
    assert command_exit_code("autotune", *base, "--budget-gflops", "0.7") == 0
    assert [options.budget_gflops for options in given] == [0.8, 0.7]


def test_tight_keeps_only_undominated_feasible_settings():
    S = autotune.Setting
    settings = [S("clustering", "backbone", a, g) for a in (1, 2, 3) for g in (0.3, 0.5, 0.8)]
    cost = {s: 0.2 * s.alpha + s.grid for s in settings}
    sizes = {"grid": [0.3, 0.5, 0.8]}
    kept = autotune.tight(settings, lambda s: cost[s] <= 1.0, sizes)
    # feasible: (1, .3) (1, .5) (1, .8) (2, .3) (2, .5) (3, .3); undominated: (1, .8),
    # (2, .5), (3, .3)
    assert sorted((s.alpha, s.grid) for s in kept) == [(1, 0.8), (2, 0.5), (3, 0.3)]
    tome = [S("tome", r=r) for r in (4, 8, 16)]
    kept = autotune.tight(tome, lambda s: s.r >= 8, {"r": [4, 8, 16]})
    assert [s.r for s in kept] == [8]               # a smaller r keeps more tokens


def test_pareto_front_and_spearman():
    points = [(0.5, 90.0), (0.6, 95.0), (0.6, 94.0), (0.7, 95.0), (0.4, 80.0), (0.5, 90.0)]
    assert autotune.pareto_front(points) == [0, 1, 4, 5]
    assert autotune.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert autotune.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (0.5, 0.5, 2, 3), y ranks (0, 1, 2, 3)
    assert autotune.spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        np.corrcoef([0.5, 0.5, 2, 3], [0, 1, 2, 3])[0, 1])


def test_cache_keeps_arrays_and_json_across_processes(tmp_path):
    path = str(tmp_path / "c.sqlite")
    cache = autotune.Cache()
    cache.put("a", {"sem_seg": np.arange(6, dtype=np.int32).reshape(2, 3)})
    cache.put("b", {"classes": [1, 2], "intersect": [3.0, 4.0]})
    assert not osp.exists(path)                              # memory only so far
    cache.open(path)
    cache.put("c", "mIoU")
    cache.close()
    again = autotune.Cache()
    again.read(path)                                         # read only: nothing written
    again.put("d", [1])
    again.close()
    again = autotune.Cache()
    again.open(path)
    assert np.array_equal(again.get("a")["sem_seg"], np.arange(6).reshape(2, 3))
    assert again.get("a")["sem_seg"].dtype == np.int32
    assert again.get("b") == {"classes": [1, 2], "intersect": [3.0, 4.0]}
    assert again.get("c") == "mIoU" and again.get("d") is None


def test_every_family_is_registered_where_the_table_says_with_a_tuner_kind():
    import importlib

    import expedite_mm
    from expedite_mm.models.families import FAMILIES, KINDS, stock_package
    expedite_mm.register_all_modules()
    for family in FAMILIES:
        assert family.kind in KINDS and family.kind in autotune.KIND_FAMILIES
        for scope in family.registries:
            registry = importlib.import_module(f"{scope}.registry").MODELS
            assert registry.module_dict[family.name] is family.expedited_class(scope)
            stock = stock_package(family, scope)
            if stock != "expedite_mm":
                assert importlib.import_module(f"{stock}.registry").MODELS.get(family.stock) \
                    is not None, (family.name, stock)


def test_as_expedited_maps_stock_backbones_and_keeps_their_keys(tiny):
    from mmengine.config import Config

    from expedite_mm.apis.config import as_expedited, load_config
    cfg, stock = as_expedited(load_config(tiny["config"]))
    assert stock == "VisionTransformer" and cfg.model.backbone.type == "ExpeditedViT"
    assert cfg.custom_imports["imports"] == ["expedite_mm"]
    assert {k: v for k, v in cfg.model.backbone.items() if k != "type"} == \
        {k: v for k, v in load_config(tiny["config"]).model.backbone.items() if k != "type"}
    again, none = as_expedited(cfg)
    assert none is None and again.model.backbone.type == "ExpeditedViT"
    for scope, given, expected in [("mmdet", "SwinTransformer", "ExpeditedSwin"),
                                   ("mmdet", "mmpretrain.SwinTransformerV2", "ExpeditedSwinV2"),
                                   ("mmseg", "ViTSAM", "ExpeditedViTSAM"),
                                   ("mmseg", "HybridViT", "ExpeditedHybridViT"),
                                   ("mmseg", "BEiT", "ExpeditedBEiT"),
                                   ("mmseg", "MAE", "ExpeditedMAE"),
                                   ("mmpretrain", "VisionTransformer",
                                    "ExpeditedVisionTransformer"),
                                   ("mmpretrain", "ViTSAM", "ExpeditedViTSAM"),
                                   ("mmseg", "MixVisionTransformer", "ExpeditedMiT"),
                                   ("mmdet", "PyramidVisionTransformerV2", "ExpeditedPVTv2")]:
        cfg = Config(dict(default_scope=scope, model=dict(backbone=dict(type=given, depth=3)),
                          custom_imports=dict(imports=["mine"])))
        out, _ = as_expedited(cfg)
        assert out.model.backbone == dict(type=expected, depth=3)
        assert out.custom_imports["imports"] == ["mine", "expedite_mm"]
    for scope, given in [("mmseg", "mmpretrain.VisionTransformer"),
                         ("mmpretrain", "mmdet.SwinTransformer"), ("mmdet", "ResNet")]:
        with pytest.raises(ValueError, match="cannot be expedited; expedite-mm expedites"):
            as_expedited(Config(dict(default_scope=scope, model=dict(backbone=dict(type=given)))))


# --------------------------------------------------------------------------- latency budgets
def fake_latency(stock_ms=100.0):
    """Latencies as an affine function of the FLOP ratio plus a fixed overhead for every
    expedited model (deterministic, unlike the machine); they go through the tuner's cache
    like measured ones."""
    def latency(self, setting):
        ratio = 1.0 if setting == autotune.STOCK else self.flops(setting)["gflops_ratio"]
        ms = stock_ms * ratio + (0 if setting == autotune.STOCK else 5.0)
        self.latency_calls.append(setting)
        return {"latency_ms": ms, "stock_ms": stock_ms, "latency_ratio": ms / stock_ms}
    return latency


def test_latency_budget_measures_the_candidates_and_meets_it(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(autotune.Tuner, "_measure_latency", fake_latency())
    monkeypatch.setattr(autotune.Tuner, "latency_calls", [], raising=False)
    work = tmp_path / "work"
    assert command_exit_code("autotune", *argv(tiny, work, "--budget-latency-ms", "78")) == 0
    rows = read_csv(work / "autotune.csv")
    chosen = next(r for r in rows if r["chosen"] == "1")
    assert float(chosen["latency_ms"]) <= 78
    assert float(chosen["latency_ms"]) == pytest.approx(100 * float(chosen["gflops_ratio"]) + 5)
    measured = [r for r in rows if r["images"] and r["family"] != "stock"]
    assert all(float(r["latency_ms"]) <= 78 for r in measured)
    # every candidate had its latency measured (the fit only decides which to measure)
    called = {s.label() for s in autotune.Tuner.latency_calls}
    assert {f"clustering a{r['alpha']} grid{r['grid']} {r['placement']}" for r in measured} <= called
    assert json.loads((work / "autotune.json").read_text())["verified"]["latency_ms"] <= 78


@pytest.mark.parametrize("budget,code,says", [("150", 0, "the stock model already runs in 100.0 ms"),
                                              ("20", 3, "no setting meets --budget-latency-ms 20")])
def test_latency_budget_met_by_the_stock_model_or_by_nothing(tiny, tmp_path, monkeypatch, capsys,
                                                              budget, code, says):
    monkeypatch.setattr(autotune.Tuner, "_measure_latency", fake_latency())
    monkeypatch.setattr(autotune.Tuner, "latency_calls", [], raising=False)
    work = tmp_path / "work"
    assert command_exit_code("autotune", *argv(tiny, work, "--budget-latency-ms", budget)) == code
    assert says in capsys.readouterr().err
    assert not osp.exists(work)


def test_latency_is_measured_interleaved_with_the_stock_model_and_cached(tiny, monkeypatch):
    from expedite_mm.analysis import latency as bench
    tuner, settings = tuner_for(tiny["config"], repeat=2)
    rounds = []
    original = bench.benchmark

    def counting(models, *args, **kwargs):
        rounds.append(sorted(models))
        return original(models, *args, **kwargs)
    monkeypatch.setattr(bench, "benchmark", counting)
    first = tuner.latency(settings[0])
    assert rounds == [["candidate", "stock"]]
    assert first["latency_ms"] > 0 and first["stock_ms"] > 0
    assert first["latency_ratio"] == pytest.approx(first["latency_ms"] / first["stock_ms"])
    assert tuner.latency(settings[0]) == first and len(rounds) == 1       # cached
