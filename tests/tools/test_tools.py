"""Our tools end to end: tools/test.py (single process and torchrun), get_flops, benchmark
(through the ``expedite-mm`` command, in this process), the demo's picture.

The dataset is a synthetic ADE20K-format one the test writes (images/validation/*.jpg,
annotations/validation/*.png with 0 = ignore), the model a tiny Segmenter derived from our
ADE20K alpha-10 config by inheritance, so the real pipelines, dataset class, evaluator and
checkpoint loading run exactly as they do for users.
"""
import json
import os.path as osp
import warnings

import numpy as np
import pytest
import torch

from harness import (ROOT, command_json, independent_miou, relabel_from_predictions, run_command,
                     run_test_tool, write_ade20k)

ADE_A10 = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")


def write_tiny_config(tmp_path, data_root):
    """Our alpha-10 config, inherited (the logits placement: head on the centres, logits
    reconstructed), with a 32-wide 4-layer ViT (cluster after 2)."""
    path = tmp_path / "tiny_segmenter_expedite.py"
    path.write_text(f"""
_base_ = {ADE_A10!r}
model = dict(
    backbone=dict(embed_dims=32, num_layers=4, num_heads=2, cluster_after=2,
                  cluster_grid=(28, 28), drop_path_rate=0.0),
    decode_head=dict(in_channels=32, channels=32, num_heads=2, embed_dims=32, num_layers=1))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={str(data_root)!r}))
env_cfg = dict(cudnn_benchmark=False)
""")
    return str(path)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """Synthetic dataset, tiny config and an official-format checkpoint of its model."""
    tmp = tmp_path_factory.mktemp("ade")
    data_root = write_ade20k(str(tmp / "ade"))
    config = write_tiny_config(tmp, data_root)
    from expedite_mm.apis.config import build_model, load_config
    model = build_model(load_config(config))
    checkpoint = tmp / "tiny_official.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2", "iter": np.int64(160000),
                         "dataset_meta": {"classes": tuple(f"c{i}" for i in range(150))}},
                "state_dict": model.state_dict()}, checkpoint)
    return tmp, data_root, config, str(checkpoint)


class Foreign:
    """Any class outside the allow-list of checkpoint types."""


@pytest.mark.slow
def test_tools_test_end_to_end_single_and_distributed(tiny_setup):
    tmp, data_root, config, checkpoint = tiny_setup
    # A random-weight model predicts none of the synthetic classes; give the images labels
    # that partly agree with its predictions, so the metric is neither 0 nor 100.
    _, first, _ = run_test_tool(config, checkpoint, tmp, "first")
    relabel_from_predictions(first, data_root)
    metrics, predictions, log = run_test_tool(config, checkpoint, tmp, "single")
    assert len(predictions) == 3
    assert "mIoU" in log                                      # printed for the user
    assert metrics["mIoU"] == pytest.approx(independent_miou(predictions, data_root), abs=0.006)
    assert 5 < metrics["mIoU"] < 95

    dist_metrics, dist_predictions, _ = run_test_tool(config, checkpoint, tmp, "dist",
                                                      launcher="pytorch")
    assert len(dist_predictions) == 3
    assert dist_metrics == metrics


def test_untrusted_checkpoint_is_refused_by_test_tool(tiny_setup, tmp_path):
    tmp, _, config, _ = tiny_setup
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}, "meta": {"x": Foreign()}}, path)
    from expedite_mm.apis.checkpoint import UntrustedCheckpointError
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        run_command("test", config, path, "--work-dir", tmp_path / "w")


@pytest.mark.slow
def test_get_flops_segmenter_vit_l_alpha10(tmp_path):
    """The released computation of alpha=10, 28x28 on 40x40 tokens: 10 layers at 1601 tokens,
    14 layers and the head at 785 / 784, the logit reconstruction; measured 443.0 / 671.5
    GFLOPs (fvcore), against the release's own 443.84 / 658.98 (its counter)."""
    summary = command_json(tmp_path, "flops", ADE_A10)
    assert summary["shape"] == [640, 640]
    assert summary["ratio_whole"] == pytest.approx(0.6596, abs=0.002)
    assert summary["ratio_backbone"] == pytest.approx(0.6752, abs=0.002)
    assert abs(summary["ratio_whole"] - 443.84 / 658.98) <= 0.02
    assert summary["stock"]["whole_gflops"] > summary["stock"]["backbone_gflops"] > 500
    # the operators are counted, not skipped (the logit reconstruction among them)
    assert summary["expedited"]["clustering_reconstruction_gflops"] > 0.5
    assert "aten::embedding_bag" not in summary["unsupported_ops"]


def test_benchmark_tool_interleaves_and_reports_ratio(tiny_setup, tmp_path, monkeypatch):
    _, _, config, checkpoint = tiny_setup
    out = tmp_path / "bench.json"
    from expedite_mm.analysis import benchmark
    returned, run_benchmark = [], benchmark.run_benchmark     # what the tool got back
    monkeypatch.setattr(benchmark, "run_benchmark",
                        lambda options: returned.append(run_benchmark(options)) or returned[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_command("benchmark", config, "--checkpoint", checkpoint, "--repeat", "3",
                    "--warmup", "1", "--shape", "480", "496", "--json", out)
    (summary,) = returned
    # 30 x 31 tokens: the expedited model really clusters to 28 x 28
    assert not [w for w in caught if "not fewer tokens" in str(w.message)]
    assert json.loads(out.read_text()) == summary
    for name in ("stock", "expedited"):
        assert len(summary[name]["latencies_ms"]) == 3
        assert summary[name]["peak_memory_mib"] > 0
    assert summary["latency_ratio"] == pytest.approx(
        summary["expedited"]["median_ms"] / summary["stock"]["median_ms"])


def test_demo_picture_groups_patch_tokens_locally(tmp_path):
    """The demo's picture: astronaut patch tokens, 40x40 -> 28x28 clusters. Every token's
    cluster lies in the 5x5 cells around its home cell, most clusters hold tokens, and
    the reconstruction is far better than the per-image mean (0 dB would be no better)."""
    from expedite_mm.analysis.demo import draw_clustering
    out = tmp_path / "demo.png"
    drawn = draw_clustering(str(out))
    assert out.stat().st_size > 10_000
    labels = drawn["labels"]
    assert labels.shape == (40, 40)
    rows, cols = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    home_r, home_c = rows * 28 // 40, cols * 28 // 40
    assert ((labels // 28 - home_r).abs() <= 2).all() and ((labels % 28 - home_c).abs() <= 2).all()
    assert drawn["clusters_used"] > 0.6 * 784
    assert drawn["psnr"] > 20


def test_get_flops_backbone_only_counts_the_same_backbone(tiny_setup, tmp_path):
    _, _, config, _ = tiny_setup
    full = command_json(tmp_path, "flops", config, "--shape", "480", "480")
    backbone = command_json(tmp_path, "flops", config, "--shape", "480", "480",
                            "--backbone-only")
    assert full["stock"]["whole_gflops"] > full["stock"]["backbone_gflops"]
    assert backbone["stock"]["whole_gflops"] is None and backbone["ratio_whole"] is None
    assert "backbone only" in backbone["note"]
    for variant in ("stock", "expedited"):
        assert backbone[variant]["backbone_gflops"] == pytest.approx(full[variant]["backbone_gflops"])
    assert backbone["ratio_backbone"] == pytest.approx(full["ratio_backbone"])


def test_every_user_tool_has_an_expedite_mm_command():
    """The ``expedite-mm`` command (installed packages) reaches every user-facing script
    under tools/, and each of its commands names a script that exists. model_zoo.py
    rewrites this repository's docs from its metafile: a developer's tool, not shipped as
    a command."""
    import glob
    from expedite_mm.cli import TOOLS
    scripts = {osp.relpath(p, osp.join(ROOT, "tools"))
               for p in glob.glob(osp.join(ROOT, "tools", "**", "*.py"), recursive=True)
               if 'if __name__ == "__main__"' in open(p).read()}
    assert set(TOOLS.values()) <= scripts
    assert scripts - set(TOOLS.values()) == {"analysis/model_zoo.py"}
