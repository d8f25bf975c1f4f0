"""The sweep on a tiny ViT config, and the uniform-downsampling transform. The engine is
the package's (``expedite_mm.analysis.sweep``); the command line is
``tools/analysis/sweep.py``'s, run in this process as ``expedite-mm sweep`` where a test
patches the engine or reads its rows, else in its own."""
import csv
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from expedite_mm.analysis import sweep
from harness import ROOT, command_exit_code, run_command, tiny_segmenter_config, write_ade20k

SEGMENTER_L = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny_vit.py"
    path.write_text(tiny_segmenter_config(tmp_path / "ade"))
    return str(path)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sweep_rows(*argv):
    """``expedite-mm sweep ARGV`` in this process; the rows its engine returned (this
    sweep's rows, as the CSV holds them), recorded by wrapping ``sweep.run`` (the tool
    imports it when it runs)."""
    returned, original = [], sweep.run

    def recording(*args, **kwargs):
        returned.append(original(*args, **kwargs))
        return returned[-1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep, "run", recording)
        run_command("sweep", *argv)
    assert len(returned) == 1
    return returned[0]


# --------------------------------------------------------------------------- downsampling
def test_uniform_downsample_segmenter_vit_l():
    """640 -> 576 on the official ADE20K config: the slide crop and stride, the test Resize
    and the preprocessor's pad size all scale by 0.9; weights-shaped keys do not."""
    from expedite_mm.apis.config import default_input_shape, load_config
    from expedite_mm.analysis.downsample import uniform_downsample
    cfg = load_config(SEGMENTER_L)
    small, info = uniform_downsample(cfg, 576)
    assert info["base"] == (640, 640) and info["size"] == (576, 576) and info["factor"] == 0.9
    assert tuple(small.model.test_cfg.crop_size) == (576, 576)
    assert tuple(small.model.test_cfg.stride) == (576, 576)            # 640 * 0.9
    assert tuple(small.model.data_preprocessor.size) == (576, 576)
    resize = [s for s in small.test_dataloader.dataset.pipeline if s["type"] == "Resize"][0]
    assert tuple(resize["scale"]) == (2304, 576)                        # (2560, 640) * 0.9
    assert tuple(small.model.backbone.img_size) == (640, 640)           # position embedding
    assert default_input_shape(small) == (576, 576)
    assert tuple(cfg.model.test_cfg.crop_size) == (640, 640)            # the input is a copy
    for size, expected in [(592, 592), (560, 560), (544, 544)]:
        assert uniform_downsample(cfg, size)[1]["size"] == (expected, expected)


def test_uniform_downsample_rejects_bad_input(tiny_config):
    from mmengine.config import Config

    from expedite_mm.analysis.downsample import uniform_downsample
    cfg = Config.fromfile(tiny_config)
    for size in (0, 96.0, "64", True):
        with pytest.raises(ValueError, match="size must be an int >= 1"):
            uniform_downsample(cfg, size)
    bare = Config(dict(model=dict(test_cfg=dict(mode="whole"),
                                  data_preprocessor=dict(size=None))))
    with pytest.raises(ValueError, match="cannot infer the input shape"):
        uniform_downsample(bare, 64)
    # a pad size alone would leave the image at full size: refused, not a silent stock row
    no_resize = Config(dict(model=dict(test_cfg=dict(mode="whole"),
                                       data_preprocessor=dict(size=(128, 128))),
                            test_dataloader=dict(dataset=dict(pipeline=[
                                dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]))))
    with pytest.raises(ValueError, match="test/val pipeline has none"):
        uniform_downsample(no_resize, 96)


# --------------------------------------------------------------------------- sweep
def test_sweep_rows_plot_and_resume(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = [tiny_config, "--alpha", "1", "--grid", "4", "6", "--window", "3", "5",
            "--reducer", "Cluster", "AvgPool+Bilinear", "EViT", "ToMe", "--downsample", "64",
            "--no-benchmark", "--out-dir", str(out)]
    rows = sweep_rows(*argv)
    table = read_csv(out / "sweep.csv")
    assert table == rows
    keys = sorted((r["reducer"], r["grid"], r["window"]) for r in table)
    expected = ([("Cluster", g, w) for g in ("4x4", "6x6") for w in ("3", "5")]
                + [(name, g, "") for name in ("AvgPool+Bilinear", "EViT", "ToMe")
                   for g in ("4x4", "6x6")]
                + [("Downsample", "", ""), ("stock", "", "")])
    assert keys == sorted(expected)
    by = {(r["reducer"], r["grid"], r["window"]): r for r in table}
    stock = by[("stock", "", "")]
    assert stock["tokens"] == "144" and stock["input"] == "96x96" and float(stock["gflops_ratio"]) == 1
    for key, r in by.items():
        if key[0] in ("stock", "Downsample"):
            continue
        assert r["alpha"] == "1" and r["input"] == "96x96"
        assert r["tokens"] == str(int(key[1][0]) ** 2)
        assert 0.4 < float(r["gflops_ratio"]) < 0.9
        assert float(r["backbone_gflops"]) < float(stock["backbone_gflops"])
        assert r["latency_ms"] == "" and r["metric"] == ""
        used = {"iters", "temperature", "k"} if key[0] == "Cluster" else set()
        assert {c for c in ("iters", "temperature", "k") if r[c] != ""} == used
    # more clusters cost more; a larger window never costs less (it can only widen the
    # EM's tiles of tokens; on this 12 x 12 grid one tile holds every token either way)
    assert float(by[("Cluster", "6x6", "5")]["gflops"]) > float(by[("Cluster", "4x4", "5")]["gflops"])
    assert float(by[("Cluster", "6x6", "5")]["gflops"]) >= float(by[("Cluster", "6x6", "3")]["gflops"])
    small = by[("Downsample", "", "")]
    assert small["input"] == "64" and small["tokens"] == "64"
    assert float(small["gflops"]) < float(stock["gflops"])
    with open(out / "sweep.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # resumed: nothing is measured again ...
    def refuse(self, row):
        raise AssertionError(f"measured again: {row}")
    monkeypatch.setattr(sweep.Measurer, "measure", refuse)
    monkeypatch.setattr(sweep.Measurer, "__init__", lambda self, *a: None)
    os.remove(out / "sweep.png")
    reference = tmp_path / "published.csv"             # dashed lines of published numbers
    reference.write_text("# a comment\nreducer,grid,gflops\npublished,4x4,0.015\n"
                         "published,6x6,0.016\nstock,,0.02\n")
    assert sweep_rows(*argv, "--reference", reference) == table
    assert osp.exists(out / "sweep.png")
    # ... and after dropping two rows, exactly those are
    monkeypatch.undo()
    measured = []
    original = sweep.Measurer.measure

    def counting(self, row):
        measured.append((row["reducer"], row["grid"], row["window"]))
        return original(self, row)
    monkeypatch.setattr(sweep.Measurer, "measure", counting)
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sweep.COLUMNS)
        writer.writeheader()
        writer.writerows(r for r in table if r["reducer"] not in ("EViT",) or r["grid"] != "6x6")
    resumed = sweep_rows(*argv, "--grid", "6")         # a narrower sweep: its own rows only
    assert measured == [("EViT", "6x6", "")]
    assert len(read_csv(out / "sweep.csv")) == len(table)
    assert sorted(r["grid"] for r in resumed if r["reducer"] == "Cluster") == ["6x6", "6x6"]


def test_sweep_rows_of_a_logits_placement_config(tiny_config):
    """A config that reconstructs the head's logits keeps that placement in its rows, except
    for EViT/ToMe (no h x w map for the head), which reconstruct inside the backbone."""
    from expedite_mm.apis.config import build_model, load_config, synthetic_batch
    cfg = load_config(tiny_config, {"model.type": "ExpeditedEncoderDecoder",
                                    "model.backbone.reconstruct_placement": "logits"})
    row = dict(reducer="", alpha="1", grid="4x4", window="", iters="", temperature="", k="",
               input="96x96")
    for label, placement in [("Cluster", "logits"), ("AvgPool+Bilinear", "logits"),
                             ("EViT", "backbone"), ("ToMe", "backbone")]:
        row_cfg = sweep.row_config(cfg, dict(row, reducer=label))
        assert row_cfg.model.backbone.reconstruct_placement == placement, label
        model = build_model(row_cfg)
        assert model.reconstructs_logits == (placement == "logits")
        with torch.no_grad():
            logits = model._forward(synthetic_batch(model, (96, 96))[0])
        assert logits.shape == (1, 150, 12, 12)
    assert cfg.model.backbone.reconstruct_placement == "logits"      # rows are copies


def test_sweep_benchmarks_against_the_stock_model(tiny_config, tmp_path):
    run_command("sweep", tiny_config, "--grid", "4", "--reducer", "ToMe", "--repeat", "1",
                "--warmup", "0", "--mode", "tensor", "--out-dir", tmp_path,
                "--plot-x", "latency_ms", "--plot-y", "gflops")
    rows = read_csv(tmp_path / "sweep.csv")            # a new CSV: this sweep's rows only
    assert [r["reducer"] for r in rows] == ["stock", "ToMe"]
    for r in rows:
        assert float(r["latency_ms"]) > 0 and float(r["latency_ratio"]) > 0
    assert float(rows[0]["latency_ratio"]) == 1.0


@pytest.mark.parametrize("argv,match", [
    (["--reducer", "Kmeans"], "reducer must be one of"),
    (["--reducer", "ToMe+Bilinear"], "cannot undo"),
    (["--grid", "4x"], "cannot read"),
    (["--grid", "1.5"], "ratio must be in"),
    (["--repeat", "0"], "--repeat must be >= 1"),
])
def test_sweep_rejects_bad_arguments(tiny_config, tmp_path, argv, match, capsys):
    """argparse's usage error (exit 2, its message on stderr), before anything is written."""
    out = tmp_path / "out"
    assert command_exit_code("sweep", tiny_config, *argv, "--out-dir", out) == 2
    assert match in capsys.readouterr().err
    assert not osp.exists(out)


def test_sweep_from_the_command_line(tiny_config, tmp_path):
    """The script itself: a usage error exits 2 with argparse's message; a sweep that cannot
    go on (expediting disabled, no --alpha) exits 1 with one line; nothing is written."""
    script = [sys.executable, osp.join(ROOT, "tools/analysis/sweep.py"), tiny_config,
              "--out-dir", str(tmp_path / "out"), "--no-benchmark"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    usage = subprocess.run(script + ["--repeat", "0"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert usage.returncode == 2 and "--repeat must be >= 1" in usage.stderr
    disabled = subprocess.run(script + ["--cfg-options", "model.backbone.cluster_after=None"],
                              capture_output=True, text=True, timeout=300, env=env)
    assert disabled.returncode == 1 and "Traceback" not in disabled.stderr
    assert disabled.stderr.strip().splitlines()[-1] == \
        "the config has expediting disabled: give --alpha"
    assert not osp.exists(tmp_path / "out")


@pytest.mark.slow
def test_sweep_evaluates_with_tools_test_when_given_a_checkpoint(tiny_config, tmp_path):
    """With a checkpoint, every row runs tools/test.py on the config's dataset (in its own
    process) and the sweep records the metric that run wrote; the plot is metric vs GFLOPs."""
    from expedite_mm.apis.config import build_model, load_config
    write_ade20k(str(tmp_path / "ade"))
    model = build_model(load_config(tiny_config))
    checkpoint = tmp_path / "tiny.pth"
    torch.save({"meta": {"iter": np.int64(1)}, "state_dict": model.state_dict()}, checkpoint)
    out = tmp_path / "out"
    run_command("sweep", tiny_config, "--grid", "4", "--reducer", "Cluster", "EViT",
                "--downsample", "64", "--checkpoint", checkpoint, "--no-benchmark",
                "--out-dir", out)
    rows = read_csv(out / "sweep.csv")                 # a new CSV: this sweep's rows only
    assert [r["reducer"] for r in rows] == ["stock", "Cluster", "EViT", "Downsample"]
    for r in rows:
        with open(out / "metrics" / (sweep.row_slug(r) + ".json")) as f:
            metrics = json.load(f)
        assert r["metric_name"] == "mIoU"
        assert float(r["metric"]) == pytest.approx(metrics["mIoU"])
        assert 0 <= float(r["metric"]) <= 100
        assert osp.exists(out / "configs" / (sweep.row_slug(r) + ".py"))
    assert osp.exists(out / "sweep.png")
