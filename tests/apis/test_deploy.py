"""Deployment: torch.compile without graph breaks, ONNX export (no loops, no custom ops)
verified with ONNX Runtime, the export tool and the ONNX Runtime / compiled benchmarks.

Models are tiny (a 32-wide 4-layer ViT derived from our ADE20K alpha-10 config by
inheritance) so that every export takes seconds; the full ViT-L export is the tool's job.
"""
import csv
import datetime
import os.path as osp
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from harness import ROOT, command_json, run_command
from lanes import needs_fullgraph_compile

from expedite_mm.ops import (TokenClustering, TokenReconstruction, cluster_windows,
                             reconstruct_windows)
from expedite_mm.ops.cluster import weighted_gather
from expedite_mm.compat import DYNAMO_ONNX_EXPORTER, FULLGRAPH_COMPILE
from expedite_mm.apis.deploy import default_exporter, export_module


ADE_A10 = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")
# ONNX ops that would mean per-token loops or control flow in the graph
CONTROL_FLOW = {"Loop", "Scan", "If", "SequenceMap"}


class ClusterReconstruct(torch.nn.Module):
    """Both operators with a stand-in for the layers in between."""

    def __init__(self, hw, grid, neighbours="global", window=3):
        super().__init__()
        self.hw = hw
        self.clustering = TokenClustering(grid, window=window, iters=3, temperature=2.0)
        self.reconstruction = TokenReconstruction(k=5, temperature=2.0, neighbours=neighbours)

    def forward(self, tokens):
        centers, state = self.clustering(tokens, self.hw)
        return centers, self.reconstruction(torch.tanh(centers) * 2, state)


class WindowClusterReconstruct(torch.nn.Module):
    def __init__(self, hw, window_size, grid):
        super().__init__()
        self.hw, self.window_size = hw, window_size
        self.clustering = TokenClustering(grid, window=3, iters=2, temperature=2.0)
        self.reconstruction = TokenReconstruction(k=4, temperature=2.0)

    def forward(self, tokens):
        centers, state = cluster_windows(self.clustering, tokens, self.hw, self.window_size)
        return centers, reconstruct_windows(self.reconstruction, centers * 2, state)


def tiny_vit(**kwargs):
    from expedite_mm.models.vit import ExpeditedViT
    model = ExpeditedViT(img_size=(80, 96), patch_size=8, embed_dims=32, num_layers=4,
                         num_heads=2, drop_path_rate=0.0, **kwargs)
    model.eval()
    return model


def write_tiny_segmenter(tmp_path, **backbone):
    """Our alpha-10 config (the release's logits placement, ties kept), inherited, with a
    32-wide 4-layer ViT (cluster after 2)."""
    settings = dict(embed_dims=32, num_layers=4, num_heads=2, cluster_after=2,
                    cluster_grid=(6, 7), drop_path_rate=0.0, **backbone)
    path = tmp_path / "tiny_segmenter_expedite.py"
    path.write_text(f"""
_base_ = {ADE_A10!r}
model = dict(
    backbone=dict({', '.join(f'{k}={v!r}' for k, v in settings.items())}),
    decode_head=dict(in_channels=32, channels=32, num_heads=2, embed_dims=32, num_layers=1))
""")
    return str(path)


def assert_outputs_equal(ours, reference, atol):
    ours = ours if isinstance(ours, (tuple, list)) else (ours,)
    reference = reference if isinstance(reference, (tuple, list)) else (reference,)
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        a = torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=atol)


# --------------------------------------------------------------------------- torch.compile
def _graph_breaks(fn, *inputs):
    explanation = torch._dynamo.explain(fn)(*inputs)
    return explanation.graph_break_count, [str(r) for r in explanation.break_reasons]


@needs_fullgraph_compile
@pytest.mark.parametrize("neighbours", ["global", "local"])
def test_operators_compile_into_one_graph(neighbours):
    torch._dynamo.reset()
    module = ClusterReconstruct((10, 12), (5, 6), neighbours)
    tokens = torch.randn(2, 120, 16)
    assert _graph_breaks(module, tokens) == (0, [])
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    assert_outputs_equal(compiled(tokens), module(tokens), atol=1e-6)


@needs_fullgraph_compile
def test_window_operators_compile_into_one_graph():
    torch._dynamo.reset()
    module = WindowClusterReconstruct((13, 11), 6, (4, 4))    # padded to 18 x 12, 6 windows
    tokens = torch.randn(2, 143, 8)
    assert _graph_breaks(module, tokens) == (0, [])
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    assert_outputs_equal(compiled(tokens), module(tokens), atol=1e-6)


@needs_fullgraph_compile
@pytest.mark.parametrize("kwargs", [
    dict(cluster_after=1, reconstruct_after=3, cluster_grid=(5, 6), out_indices=(1, 2, 3)),
    dict(cluster_after=2, cluster_grid=0.7, final_norm=True, with_cls_token=False,
         reconstruct_neighbours="local", reconstruct_normalize="l2"),
])
def test_expedited_vit_forward_compiles_into_one_graph(kwargs):
    torch._dynamo.reset()
    model = tiny_vit(**kwargs)
    x = torch.randn(2, 3, 80, 96)
    with torch.no_grad():
        assert _graph_breaks(lambda t: model(t), x) == (0, [])
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        assert_outputs_equal(compiled(x), model(x), atol=1e-5)


@needs_fullgraph_compile
def test_logits_placement_backbone_compiles_into_one_graph():
    """What ExpeditedEncoderDecoder calls: the centre maps and the clustering state."""
    torch._dynamo.reset()
    model = tiny_vit(cluster_after=2, cluster_grid=(5, 6), reconstruct_placement="logits",
                     reconstruct_normalize="l2", reconstruct_ties="keep")
    x = torch.randn(2, 3, 80, 96)
    with torch.no_grad():
        assert _graph_breaks(model.forward_with_state, x) == (0, [])
        compiled = torch.compile(model.forward_with_state, fullgraph=True, backend="eager")
        (maps, state), (reference, reference_state) = compiled(x), model.forward_with_state(x)
        assert_outputs_equal(maps, reference, atol=1e-5)
        assert_outputs_equal(model.reconstruct_map(maps[-1], state),
                             model.reconstruct_map(reference[-1], reference_state), atol=1e-5)


@pytest.mark.slow
def test_inductor_compiles_the_operators_to_the_same_numbers():
    """The real compiler (fused C++ kernels on the CPU, Triton on a GPU): same results
    (in one graph where dynamo traces the operators whole, torch >= 2.3)."""
    torch._dynamo.reset()
    module = ClusterReconstruct((12, 12), (8, 8), window=5)
    tokens = torch.randn(2, 144, 32)
    compiled = torch.compile(module, fullgraph=FULLGRAPH_COMPILE)
    with torch.no_grad():     # fused kernels sum in another order: fp32 rounding only
        assert_outputs_equal(compiled(tokens), module(tokens), atol=1e-4)


def test_compile_with_graph_breaks_gives_eager_numbers():
    """On every torch: torch.compile of the operators (and of a model around them) runs and
    gives the eager numbers; where dynamo cannot trace them whole (torch < 2.3) it breaks
    the graph around the tile tables instead of failing."""
    torch._dynamo.reset()
    module = KeepTies()
    tokens = tied_tokens()
    with torch.no_grad():
        expected = module(tokens)
        assert_outputs_equal(torch.compile(module, backend="eager")(tokens), expected,
                             atol=1e-6)
        breaks, _ = _graph_breaks(module, tokens)
    assert (breaks == 0) == FULLGRAPH_COMPILE


# --------------------------------------------------------------------------- ONNX
def _export_and_run(module, inputs, path, exporter=None):
    """Exported with ``exporter`` (default: the dynamo exporter where torch has it, else
    the TorchScript one; expedite_mm.apis.deploy.export_module)."""
    export_module(module, inputs, str(path), exporter)
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    domains = {node.domain for node in model.graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    return ops, domains, model, outputs


@pytest.mark.parametrize("neighbours", ["global", "local"])
def test_operators_export_to_onnx_without_loops_or_custom_ops(neighbours, tmp_path):
    module = ClusterReconstruct((10, 12), (5, 6), neighbours)
    tokens = torch.randn(2, 120, 16)
    ops, domains, model, outputs = _export_and_run(module, tokens, tmp_path / "ops.onnx")
    assert not ops & CONTROL_FLOW and not model.functions, ops
    assert domains <= {"", "ai.onnx"}, domains                # standard ops only
    with torch.no_grad():
        reference = module(tokens)
    assert_outputs_equal(outputs, reference, atol=1e-5)


class KeepTies(torch.nn.Module):
    """Reconstruction that keeps the centres tied with the k-th (the release's rule), on
    centres of which several are identical (as pure-padding centres are)."""

    def __init__(self):
        super().__init__()
        self.clustering = TokenClustering((4, 4), window=3, iters=2, temperature=2.0)
        self.reconstruction = TokenReconstruction(k=5, temperature=2.0, normalize="l2",
                                                  ties="keep")

    def forward(self, tokens):
        centers, state = self.clustering(tokens, (8, 8))
        return self.reconstruction(torch.tanh(centers), state)


def tied_tokens():
    tokens = torch.zeros(2, 64, 8)
    tokens[:, :16] = torch.randn(2, 16, 8)       # two rows of content, six of zeros
    return tokens


def test_kept_ties_compile_and_export_to_the_eager_numbers(tmp_path):
    """Eagerly the tied centres widen the selection (a data-dependent size); traced, all
    centres are weighed with the others masked: the same numbers, static shapes. (Compiled
    in one graph where dynamo traces the operators whole, torch >= 2.3; exported on every
    torch.)"""
    torch._dynamo.reset()
    module, tokens = KeepTies(), tied_tokens()
    centers, state = module.clustering(tokens, (8, 8))
    index, _ = module.reconstruction.weights(state)
    assert index.shape[-1] > 5                                # ties did widen the top-k
    assert_compiles_and_exports(module, tokens, tmp_path / "ties.onnx")


def assert_compiles_and_exports(module, tokens, path):
    """Compiled in one graph (where dynamo traces the operators whole) and exported to
    ONNX, ``module`` gives its eager numbers."""
    with torch.no_grad():
        expected = module(tokens)
    if FULLGRAPH_COMPILE:
        assert _graph_breaks(module, tokens) == (0, [])
        with torch.no_grad():
            assert_outputs_equal(torch.compile(module, fullgraph=True, backend="eager")(tokens),
                                 expected, atol=1e-6)
    _, _, _, outputs = _export_and_run(module, tokens, path)
    assert_outputs_equal(outputs, expected, atol=1e-5)


class ExactTies(KeepTies):
    """The same centres, exactly k of them taken (the default rule): of identical centres
    tied at the k-th distance, those with the lowest indices. The stand-in for the layers
    mixes neighbouring centres, so that which of the identical ones is taken shows."""

    def __init__(self):
        super().__init__()
        self.reconstruction = TokenReconstruction(k=5, temperature=2.0, normalize="l2")

    def forward(self, tokens):
        centers, state = self.clustering(tokens, (8, 8))
        return self.reconstruction(torch.tanh(centers) + 0.3 * centers.roll(1, dims=1), state)


def test_exact_ties_compile_and_export_to_the_eager_numbers(tmp_path):
    """Eagerly only the rows with tied centres are decided again; traced, every row is, with
    static shapes: the same centres, the same numbers. (Compiled in one graph where dynamo
    traces the operators whole, torch >= 2.3; exported on every torch.)"""
    torch._dynamo.reset()
    module, tokens = ExactTies(), tied_tokens()
    _, state = module.clustering(tokens, (8, 8))
    distance = torch.cdist(state.tokens.double(), state.centers.double()).square()
    nearest = distance.sort(-1).values
    assert ((nearest[..., 5] - nearest[..., 4]).abs() < 1e-6).any()  # ties at the k-th
    assert_compiles_and_exports(module, tokens, tmp_path / "exact_ties.onnx")


def test_window_operators_export_to_onnx(tmp_path):
    module = WindowClusterReconstruct((13, 11), 6, (4, 4))
    tokens = torch.randn(2, 143, 8)
    ops, domains, model, outputs = _export_and_run(module, tokens, tmp_path / "windows.onnx")
    assert not ops & CONTROL_FLOW and domains <= {"", "ai.onnx"}
    with torch.no_grad():
        assert_outputs_equal(outputs, module(tokens), atol=1e-5)


def test_exported_form_of_the_weighted_gather_gives_the_same_sums(monkeypatch):
    """While exporting, the gather is a dense scatter + matmul instead of embedding_bag:
    the same function (checked on the same inputs, repeated indices included)."""
    values = torch.randn(2, 9, 5, dtype=torch.float64)
    index = torch.randint(0, 9, (2, 7, 4))
    weight = torch.rand(2, 7, 4, dtype=torch.float64)
    eager = weighted_gather(values, index, weight)
    import expedite_mm.ops.cluster as cluster
    monkeypatch.setattr(cluster, "is_exporting", lambda: True)
    exported_form = weighted_gather(values, index, weight)
    torch.testing.assert_close(exported_form, eager, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_expedited_vit_exports_and_matches_onnxruntime(tmp_path, exporter):
    if exporter == "dynamo" and not DYNAMO_ONNX_EXPORTER:
        with pytest.raises(RuntimeError, match=rf"needs torch >= 2\.5; this is torch "
                                               rf"{re.escape(torch.__version__)}"):
            export_module(tiny_vit(), torch.randn(1, 3, 80, 96), str(tmp_path / "x.onnx"),
                          exporter)
        assert default_exporter() == "torchscript"
        return
    model = tiny_vit(cluster_after=1, reconstruct_after=3, cluster_grid=(5, 6),
                     out_indices=(1, 3))
    x = torch.randn(1, 3, 80, 96)
    ops, domains, _, outputs = _export_and_run(model, x, tmp_path / "vit.onnx", exporter)
    assert not ops & CONTROL_FLOW and domains <= {"", "ai.onnx"}
    assert {"TopK", "MatMul", "ReduceLogSumExp"} <= ops             # the operators are in
    with torch.no_grad():
        assert_outputs_equal(outputs, model(x), atol=1e-4)


def test_export_tool_segmenter_verifies_with_dynamic_batch(tmp_path, monkeypatch):
    from expedite_mm.apis.config import build_model, load_config
    from expedite_mm.apis.deploy import TensorForward, onnxruntime_session, run_session

    config = write_tiny_segmenter(tmp_path)
    model = build_model(load_config(config))
    checkpoint, out = tmp_path / "tiny.pth", tmp_path / "tiny.onnx"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    summary = command_json(tmp_path, "onnx", config, "--checkpoint", checkpoint, "--shape",
                           "160", "144", "--out", out, "--verify", "--dynamic",
                           "--batch-size", "2")
    assert summary["verified"] and summary["rel_error"] <= 1e-5 and summary["max_rel_error"] <= 1e-4
    assert not set(summary["ops"]) & CONTROL_FLOW
    # dynamic batch: the same file runs a batch of 3 and agrees with PyTorch
    x = torch.randn(3, 3, 160, 144)
    (logits,) = run_session(onnxruntime_session(str(out)), x.numpy())
    assert logits.shape == (3, 150, 10, 9)
    wrapper = TensorForward(model)
    wrapper.eval()
    with torch.no_grad():
        assert_outputs_equal(logits, wrapper(x), atol=1e-4)
    # over the tolerance: exit status 1 (the same file verified again, not re-exported)
    import expedite_mm.apis.deploy as deploy
    monkeypatch.setattr(deploy, "export_onnx", lambda *args, **kwargs: None)
    with pytest.raises(SystemExit) as exit_info:
        run_command("onnx", config, "--checkpoint", checkpoint, "--shape", "160", "144",
                    "--out", out, "--verify", "--tolerance", "1e-12")
    assert exit_info.value.code == 1


def test_export_refuses_unsupported_models():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from expedite_mm.apis.deploy import check_exportable
    with pytest.raises(ValueError, match="EncoderDecoder"):
        check_exportable(torch.nn.Linear(2, 2))
    init_default_scope("mmseg")
    fcn = MODELS.build(dict(
        type="EncoderDecoder",
        backbone=dict(type="ResNetV1c", depth=18, num_stages=4, out_indices=(3,)),
        decode_head=dict(type="FCNHead", in_channels=512, channels=16, num_convs=1,
                         num_classes=4, in_index=0)))
    with pytest.raises(ValueError, match="ResNetV1c backbone: supported are"):
        check_exportable(fcn)


# --------------------------------------------------------------------------- benchmarks
def test_benchmark_onnxruntime_backend(tmp_path):
    config = write_tiny_segmenter(tmp_path)
    summary = command_json(tmp_path, "benchmark", config, "--backend", "onnxruntime",
                           "--shape", "160", "144", "--repeat", "3", "--warmup", "1",
                           "--threads", "1", "--onnx-dir", tmp_path / "onnx")
    assert summary["backend"] == "onnxruntime" and summary["mode"] == "tensor"
    assert (tmp_path / "onnx" / "stock_160x144.onnx").exists()
    for name in ("stock", "expedited"):
        assert len(summary[name]["latencies_ms"]) == 3 and summary[name]["peak_memory_mib"] is None
    assert summary["latency_ratio"] == pytest.approx(
        summary["expedited"]["median_ms"] / summary["stock"]["median_ms"])


def test_benchmark_rejects_predict_mode_with_onnxruntime(tmp_path):
    with pytest.raises(SystemExit):
        run_command("benchmark", "cfg.py", "--backend", "onnxruntime", "--mode", "predict")


@pytest.mark.slow
def test_benchmark_compiled_models(tmp_path):
    config = write_tiny_segmenter(tmp_path)
    summary = command_json(tmp_path, "benchmark", config, "--compile", "--mode", "tensor",
                           "--shape", "160", "144", "--repeat", "2", "--warmup", "1",
                           "--threads", "1", "--no-memory")
    assert summary["backend"] == "pytorch compiled"
    assert summary["latency_ratio"] > 0


@pytest.mark.slow
def test_compile_model_compiles_the_path_the_segmentor_runs(tmp_path):
    """The logits placement calls backbone.forward_with_state, mmseg calls
    decode_head.forward: both are compiled."""
    from expedite_mm.analysis.benchmark import compile_model
    from expedite_mm.apis.config import build_model, load_config
    config = load_config(write_tiny_segmenter(tmp_path))
    model = build_model(config).eval()
    keys = set(model.state_dict())
    x = torch.rand(1, 3, 160, 144)
    with torch.no_grad():
        eager = model(x, mode="tensor")
        torch._dynamo.reset()
        compile_model(model)
        compiled = model(x, mode="tensor")
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert hasattr(model.backbone.forward_with_state, "_torchdynamo_orig_callable")
    assert graphs >= 2       # the backbone's and the head's (mmseg calls head.forward)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    assert set(model.state_dict()) == keys


@pytest.mark.parametrize("size", ["64x", "x64", "64x96x3", "-64", "a"])
def test_benchmark_sizes_are_checked_when_parsed(size, capsys):
    with pytest.raises(SystemExit):
        run_command("benchmark", "config.py", "--sizes", size, "--csv", "f.csv")
    assert "a size is S or HxW" in capsys.readouterr().err


def test_benchmark_size_sweep_writes_csv_and_plot(tmp_path):
    config = write_tiny_segmenter(tmp_path)
    out_csv, out_png = tmp_path / "sweep.csv", tmp_path / "sweep.png"
    summary = command_json(tmp_path, "benchmark", config, "--mode", "tensor", "--sizes", "128",
                           "96x160", "--batch-sizes", "1", "2", "--repeat", "2", "--warmup",
                           "0", "--threads", "1", "--no-memory", "--csv", out_csv,
                           "--png", out_png, "--cfg-options", "model.backbone.cluster_grid=0.7")
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [(r["size"], int(r["batch_size"])) for r in rows] == [   # S, or HxW if not square
        ("128", 1), ("128", 2), ("96x160", 1), ("96x160", 2)]
    assert rows == [{k: str(v) for k, v in r.items()} for r in summary["rows"]]
    for row in rows:
        assert float(row["latency_ratio"]) == pytest.approx(
            float(row["expedited_median_ms"]) / float(row["stock_median_ms"]))
        assert "1 threads" in row["machine"]                 # where and when it was measured
        assert datetime.date.fromisoformat(row["date"]) <= datetime.date.today()
    assert out_png.stat().st_size > 5_000


def test_ops_benchmark_times_ours_against_the_dense_formulation(tmp_path):
    from expedite_mm.analysis import ops_benchmark
    summary = command_json(tmp_path, "ops-benchmark", "--sides", "12", "--channels", "16",
                           "--repeat", "2", "--warmup", "0", "--threads", "1", "--no-backbone")
    (row,) = summary["rows"]
    assert row["tokens"] == 144 and row["grid"] == [8, 8] and row["share"] is None
    for name in ("ours", "dense", "ours_cluster", "dense_reconstruct"):
        assert 0 < row[name]["best_ms"] <= row[name]["median_ms"]
    assert row["speedup_best"] == pytest.approx(row["dense"]["best_ms"] / row["ours"]["best_ms"])
    # the share column times the expedited backbone of a config at 16 * side pixels
    config = write_tiny_segmenter(tmp_path)
    assert ops_benchmark.backbone_time(config, 10, 0.7, torch.device("cpu"), repeat=1) > 0
    from expedite_mm.apis.config import load_config
    for width, name in ops_benchmark.BACKBONE_CONFIGS.items():   # the share column's configs
        path = osp.join(ROOT, "configs", name)
        assert load_config(path).model.backbone.embed_dims == width
