"""tools/analysis/autotune.py on tiny models: the search, the FLOP model, the resume
cache, the written config, the error cases, and the validation against labels."""
import csv
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness import ROOT, load_tool, run_test_tool, write_ade20k

autotune = load_tool("tools/analysis/autotune.py")

# a stock mmseg config (VisionTransformer + Segmenter head): the tool maps it to ours
TINY_SEG = """
default_scope = 'mmseg'
crop_size = (96, 96)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(type='VisionTransformer', img_size=crop_size, patch_size=8, embed_dims=32,
                  num_layers=4, num_heads=2, mlp_ratio=2, final_norm=True, out_indices=(3,),
                  with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6)),
    decode_head=dict(type='SegmenterMaskTransformerHead', in_channels=32, channels=32,
                     num_classes=150, num_layers=1, num_heads=2, embed_dims=32,
                     dropout_ratio=0.0, loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=crop_size))
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


def _photos():
    from skimage import data
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny stock config, a random checkpoint and a folder of 4 photos."""
    import cv2

    from expedite_mm.utils.config import as_expedited, build_model, load_config
    root = tmp_path_factory.mktemp("autotune")
    config = root / "tiny_seg.py"
    config.write_text(TINY_SEG.format(data_root=str(root / "ade")))
    torch.manual_seed(0)
    cfg, _ = as_expedited(load_config(str(config)))
    model = build_model(cfg)
    checkpoint = root / "tiny.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, checkpoint)
    images = root / "images"
    images.mkdir()
    for i, (photo, (h, w)) in enumerate(zip(_photos(), [(96, 128), (120, 96), (96, 96),
                                                         (100, 140)])):
        cv2.imwrite(str(images / f"photo{i}.jpg"),
                    cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)[..., ::-1])
    return {"root": root, "config": str(config), "checkpoint": str(checkpoint),
            "images": str(images)}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def argv(tiny, work, *extra):
    return [tiny["config"], tiny["checkpoint"], "--images", tiny["images"], "--work-dir",
            str(work), "--first-images", "2", "--eta", "2", "--quiet", *extra]


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

    from expedite_mm.utils.checkpoint import checkpoint_policy
    with checkpoint_policy():
        model = init_model(config, checkpoint, device="cpu")
    return [inference_model(model, path).pred_sem_seg.data[0].numpy() for path in images]


# --------------------------------------------------------------------------- end to end
def test_end_to_end_meets_budget_on_pareto_front_and_writes_a_working_config(tiny, tmp_path):
    from mmengine.config import Config

    from expedite_mm.utils.config import build_model, default_input_shape
    from expedite_mm.utils.flops import model_flops
    work = tmp_path / "work"
    assert autotune.main(argv(tiny, work, "--budget-gflops", "0.75")) == 0
    rows = read_csv(work / "autotune.csv")
    summary = json.loads((work / "autotune.json").read_text())
    chosen = [r for r in rows if r["chosen"] == "1"]
    assert len(chosen) == 1
    chosen = chosen[0]
    ratio = float(chosen["gflops_ratio"])
    assert ratio <= 0.75
    assert chosen["images"] == "4" and chosen["agreement_measure"] == "mIoU"
    # the Pareto front, recomputed here over everything measured on all 4 images
    full = [r for r in rows if r["images"] == "4"]
    points = [(float(r["gflops_ratio"]), float(r["agreement"])) for r in full]
    front = [r for r, (c, a) in zip(full, points)
             if not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points)]
    assert chosen in front
    assert {r["family"] + r["alpha"] + r["grid"] + r["placement"] for r in front} == \
        {r["family"] + r["alpha"] + r["grid"] + r["placement"] for r in rows if r["pareto"] == "1"}
    # it is the best agreement within the budget among those measured on every image
    within = [float(r["agreement"]) for r in full if r["family"] != "stock"
              and float(r["gflops_ratio"]) <= 0.75]
    assert float(chosen["agreement"]) == max(within)
    # every status is one of the documented ones; over-budget rows really are over it
    for r in rows[1:]:
        assert r["status"].split(" ")[0] in ("chosen", "finalist", "stopped", "over",
                                             "dominated", "invalid:"), r["status"]
        if r["status"] == "over budget":
            assert float(r["gflops_ratio"]) > 0.75
    # the written config: user's config as _base_, builds, counts the CSV's ratio
    text = (work / "autotune_config.py").read_text()
    assert f"_base_ = {tiny['config']!r}" in text
    cfg = Config.fromfile(str(work / "autotune_config.py"))
    backbone = cfg.model.backbone
    assert backbone.type == "ExpeditedViT" and backbone.cluster_after == int(chosen["alpha"])
    assert tuple(backbone.cluster_grid) == tuple(int(v) for v in chosen["grid_hw"].split("x"))
    assert backbone.embed_dims == 32 and backbone.num_layers == 4      # stock keys kept
    stock_cfg = Config.fromfile(tiny["config"])
    model, stock = build_model(cfg), build_model(cfg, None)
    stock_cfg_model = build_model(autotune.apply_setting(cfg, autotune.STOCK))
    shape = default_input_shape(cfg)
    counted = model_flops(model, shape).whole / model_flops(stock_cfg_model, shape).whole
    assert counted == pytest.approx(ratio, rel=1e-5)
    assert summary["verified"]["gflops_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert stock_cfg.model.backbone.type == "VisionTransformer"
    del stock
    # the agreement of the chosen setting, recomputed by mmseg's inference API + by hand
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


def test_rerun_repeats_nothing_and_an_interrupted_run_resumes(tiny, tmp_path, monkeypatch):
    work = tmp_path / "work"
    args = argv(tiny, work, "--budget-gflops", "0.7")
    assert autotune.main(args) == 0
    first = json.loads((work / "autotune.json").read_text())
    assert first["forwards"] > 0
    assert autotune.main(args) == 0
    again = json.loads((work / "autotune.json").read_text())
    assert again["forwards"] == 0 and again["flop_counts"] == 1     # the verifying count only
    assert again["chosen"] == first["chosen"] and again["agreement"] == first["agreement"]

    # interrupted after 3 forwards, then resumed (every candidate run in full here, so
    # that each forward is one stored measurement): nothing is measured twice, and all
    # runs together made exactly one forward per image for the stock model plus one per
    # candidate and image it was measured on
    other = tmp_path / "other"
    args = argv(tiny, other, "--budget-gflops", "0.7", "--no-stock-reuse")
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
    assert autotune.main(args) == 130
    assert not osp.exists(other / "autotune.csv")               # no half-written results
    before = set(stored)
    stored.clear()
    monkeypatch.setattr(autotune.Tuner, "_run", original_run)
    assert autotune.main(args) == 0
    assert not before & set(stored)
    resumed = json.loads((other / "autotune.json").read_text())
    rows = read_csv(other / "autotune.csv")
    measured = sum(int(r["images"]) for r in rows[1:] if r["images"])
    assert 3 + resumed["forwards"] == 4 + measured
    # the same choice and agreement as with the stock model's layers replayed
    assert resumed["chosen"] == first["chosen"] and resumed["agreement"] == first["agreement"]


def test_flop_model_matches_real_counts(tiny):
    """Every setting's FLOPs as the tool derives them (one stubbed count per chain: the
    stock layers before alpha, the chain's clustered layers after it) equal the setting's
    own fvcore count, for both placements and a baseline family."""
    import argparse

    from expedite_mm.utils.config import as_expedited, build_model, load_config
    cfg, _ = as_expedited(load_config(tiny["config"]))
    args = argparse.Namespace(shape=None, checkpoint=tiny["checkpoint"], budget_on="whole",
                              device="cpu", validate=False, families=["clustering", "tome"],
                              alphas=None, grid_ratios=[0.3, 0.5, 0.8], keep_rates=[],
                              tome_r=[], no_stock_reuse=False)
    tuner = autotune.Tuner(args, cfg, build_model(autotune.apply_setting(cfg, autotune.STOCK)), [])
    settings = autotune.search_space(args, cfg, tuner.structure)
    assert {s.placement for s in settings} == {"logits", "backbone"}
    assert sorted({s.alpha for s in settings}) == [1, 2, 3]
    assert len(settings) == 27
    tuner.prepare_chains(settings)
    derived = {s: tuner.flops(s) for s in settings}
    assert tuner.flop_counts == 1 + 9               # the stock model and one per chain
    for s in settings:
        assert derived[s]["flops"] == "derived"
        counted = tuner._count(s)
        assert derived[s]["gflops"] * 1e9 == pytest.approx(counted["whole"], abs=0.5), s
        assert derived[s]["backbone_gflops"] * 1e9 == pytest.approx(counted["backbone"], abs=0.5)
    # the logits placement runs the head on the centres: cheaper than in the backbone
    a = autotune.Setting("clustering", "logits", 2, 0.5)
    b = autotune.Setting("clustering", "backbone", 2, 0.5)
    assert derived[a]["gflops"] < derived[b]["gflops"]
    assert derived[a]["backbone_gflops"] < derived[b]["backbone_gflops"]


# --------------------------------------------------------------------------- errors
def run_cli(*args):
    result = subprocess.run([sys.executable, osp.join(ROOT, "tools/analysis/autotune.py"),
                             *args, "--quiet"], capture_output=True, text=True, timeout=300)
    return result.returncode, result.stderr.strip().splitlines(), result.stdout


@pytest.mark.parametrize("case", ["empty", "unreadable", "budget", "backbone", "checkpoint",
                                  "alphas"])
def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, case):
    work = tmp_path / "work"
    images = tiny["images"]
    config, checkpoint = tiny["config"], tiny["checkpoint"]
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
        extra, code, match = ["--budget-gflops", "0.05"], 3, "no setting meets --budget-gflops 0.05: the cheapest"
    elif case == "backbone":
        config = tmp_path / "resnet.py"
        config.write_text(f"_base_ = {tiny['config']!r}\n"
                          "model = dict(backbone=dict(_delete_=True, type='ResNetV1c', depth=18))\n")
        match = "'ResNetV1c' (mmseg) in a mmseg config cannot be expedited"
    elif case == "checkpoint":
        checkpoint = str(tmp_path / "missing.pth")
        match = "no such file"
    else:
        extra += ["--families", "clustering,evit", "--alphas", "9"]
        match = "cluster_after must be < 4"
    code_got, lines, _ = run_cli(str(config), str(checkpoint), "--images", str(images),
                                 "--work-dir", str(work), *extra)
    assert code_got == code, lines
    assert len(lines) == 1 and lines[0].startswith("autotune.py: error:"), lines
    assert match in lines[0]
    assert not osp.exists(work)


def test_the_cheapest_setting_is_named_when_the_budget_cannot_be_met(tiny, tmp_path):
    code, lines, _ = run_cli(tiny["config"], tiny["checkpoint"], "--images", tiny["images"],
                             "--work-dir", str(tmp_path / "w"), "--budget-gflops", "0.05",
                             "--grid-ratios", "0.5")
    assert code == 3
    # the cheapest setting: the smallest grid at the first alpha, the logits placement
    assert "clustering a1 grid0.5 logits" in lines[0]


# --------------------------------------------------------------------------- validation
def test_validation_ranks_settings_and_matches_tools_test(tiny, tmp_path):
    """--validate on a labelled synthetic ADE20K set: >= 12 settings with agreement and
    true mIoU; the true mIoU of a setting equals tools/test.py's on its config."""
    data_root = tiny["root"] / "ade"
    if not data_root.exists():
        write_ade20k(str(data_root))
    work = tmp_path / "work"
    code = autotune.main([tiny["config"], tiny["checkpoint"], "--val", "3", "--work-dir",
                          str(work), "--validate", "--validate-budgets", "0.6", "0.8",
                          "--budget-gflops", "0.8", "--quiet", "--first-images", "1"])
    assert code == 0
    report = json.loads((work / "validation.json").read_text())
    rows = read_csv(work / "validation.csv")
    assert report["settings"] == len(rows) >= 12
    assert -1 <= report["spearman_rho"] <= 1
    assert [b["budget"] for b in report["budgets"]] == [0.6, 0.8]
    for b in report["budgets"]:
        assert b["pick_cost"] <= b["budget"] and b["oracle_cost"] <= b["budget"]
        assert b["gap"] == pytest.approx(b["oracle_true_metric"] - b["pick_true_metric"])
        assert b["gap"] >= 0
    # the true mIoU of one setting through tools/test.py (an independent path)
    row = rows[len(rows) // 2]
    setting = next(s for s in _settings(tiny) if s.label() == row["setting"])
    from expedite_mm.utils.config import as_expedited, load_config
    cfg, _ = as_expedited(load_config(tiny["config"]))
    path = tmp_path / "one.py"
    autotune.apply_setting(cfg, setting).dump(str(path))
    metrics, _, _ = run_test_tool(str(path), tiny["checkpoint"], tmp_path, "one")
    assert float(row["true_metric"]) == pytest.approx(metrics["mIoU"], abs=0.01)


def _settings(tiny):
    import argparse

    from expedite_mm.utils.config import as_expedited, build_model, load_config
    cfg, _ = as_expedited(load_config(tiny["config"]))
    args = argparse.Namespace(alphas=None, grid_ratios=list(autotune.DEFAULT_RATIOS),
                              families=["clustering"], keep_rates=[], tome_r=[])
    model = build_model(autotune.apply_setting(cfg, autotune.STOCK))
    return autotune.search_space(args, cfg, autotune.probe_structure(cfg, model, (96, 96)))


# --------------------------------------------------------------------------- pieces
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
    cache = autotune.Cache()
    cache.put("a", {"sem_seg": np.arange(6, dtype=np.int32).reshape(2, 3)})
    cache.put("b", {"classes": [1, 2], "intersect": [3.0, 4.0]})
    assert not osp.exists(tmp_path / "c.sqlite")                  # memory only so far
    cache.open(str(tmp_path / "c.sqlite"))
    cache.put("c", "mIoU")
    cache.close()
    again = autotune.Cache()
    again.open(str(tmp_path / "c.sqlite"))
    assert np.array_equal(again.get("a")["sem_seg"], np.arange(6).reshape(2, 3))
    assert again.get("a")["sem_seg"].dtype == np.int32
    assert again.get("b") == {"classes": [1, 2], "intersect": [3.0, 4.0]}
    assert again.get("c") == "mIoU" and again.get("d") is None
