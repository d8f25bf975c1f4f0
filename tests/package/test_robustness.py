"""A library people embed: every expedited backbone is correct under inference_mode then
autograd, after weight updates written through ``.data`` (as EMA hooks do), from several
threads at once with different input sizes, under ``torch.jit.trace``, after pickling --
and the repository documents itself."""
import os.path as osp
import pickle
import subprocess
import threading

import pytest
import torch
from lanes import needs_fullgraph_compile

import expedite_mm

expedite_mm.register_all_modules()  # registers the backbones
from expedite_mm.ops import TokenClustering, TokenReconstruction

from harness import ROOT  # noqa: E402

VIT = dict(img_size=(64, 64), patch_size=8, embed_dims=32, num_layers=4, num_heads=2,
           mlp_ratio=2, final_norm=True, out_indices=(1, 3))
SWIN = dict(embed_dims=16, depths=(1, 1, 4, 1), num_heads=(1, 1, 2, 2), window_size=6,
            mlp_ratio=2, drop_path_rate=0.0)
SWINV2 = dict(arch=dict(embed_dims=16, depths=[1, 1, 4, 1], num_heads=[1, 1, 2, 2],
                        extra_norm_every_n_blocks=0),
              window_size=[8, 8, 8, 4], pretrained_window_sizes=[6, 6, 6, 3],
              out_indices=(0, 1, 2, 3), pad_small_map=True, drop_path_rate=0.0)
MIT = dict(embed_dims=16, num_layers=[1, 1, 3, 1], num_heads=[1, 1, 2, 2])
# (name, registry package, type, stock arguments, expedite arguments, two input sizes)
BACKBONES = {
    "vit": ("mmseg", "ExpeditedViT", VIT, dict(cluster_after=1, reconstruct_after=3,
                                              cluster_grid=(5, 5), cluster_window=3),
            [(1, 3, 64, 64), (2, 3, 56, 80)]),
    "swin": ("mmdet", "ExpeditedSwin", SWIN, dict(cluster_after=1, clustered_window_size=4,
                                                 cluster_window=3), [(1, 3, 160, 224), (2, 3, 224, 160)]),
    "swinv2": ("mmdet", "ExpeditedSwinV2", SWINV2, dict(cluster_after=1, clustered_window_size=6,
                                                       cluster_window=3),
               [(1, 3, 224, 224), (2, 3, 288, 224)]),
    "mit": ("mmseg", "ExpeditedMiT", MIT, dict(cluster_after=1, cluster_grid=(4, 5),
                                              cluster_window=3),
            [(1, 3, 128, 128), (2, 3, 112, 160)]),
    "pvtv2": ("mmdet", "ExpeditedPVTv2", dict(MIT, mlp_ratios=[2] * 4),
            dict(cluster_after=1, cluster_grid=(4, 5), cluster_window=3),
            [(1, 3, 128, 128), (2, 3, 112, 160)]),
}


def build(name, seed=0, **changes):
    from mmengine.registry import init_default_scope
    import importlib
    package, type_, stock, expedite, _ = BACKBONES[name]
    init_default_scope(package)
    torch.manual_seed(seed)
    model = importlib.import_module(f"{package}.registry").MODELS.build(
        dict(type=type_, **stock, **{**expedite, **changes}))
    model.eval()          # (mmdet's SwinTransformer.train returns None: no chaining)
    return model


def flat(outputs):
    return [o for o in outputs if isinstance(o, torch.Tensor)]


@pytest.mark.parametrize("name", BACKBONES)
def test_inference_mode_then_training_forward_and_backward(name):
    model = build(name)
    x = torch.randn(*BACKBONES[name][4][0])
    with torch.inference_mode():
        model(x)
    model.train()
    loss = sum(o.square().mean() for o in flat(model(x)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_operators_inference_mode_then_autograd():
    clustering, reconstruction = TokenClustering((5, 6), window=3), TokenReconstruction(k=4)
    x = torch.randn(2, 10 * 12, 8)
    with torch.inference_mode():
        centers, state = clustering(x, (10, 12))
        reconstruction(centers, state)
    y = x.clone().requires_grad_()
    centers, state = clustering(y, (10, 12))
    reconstruction(centers * 2, state).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


@pytest.mark.parametrize("name", BACKBONES)
def test_weights_written_through_data_take_effect(name):
    """EMA hooks write ``param.data``, which bumps no version counter: the next forward
    must equal a model freshly built with those weights."""
    model, other = build(name, seed=0), build(name, seed=1)
    x = torch.randn(*BACKBONES[name][4][0])
    with torch.no_grad():
        model(x)
        for mine, theirs in zip(model.parameters(), other.parameters()):
            mine.data.copy_(theirs.data)         # in place, through .data
        for mine, theirs in zip(model.buffers(), other.buffers()):
            mine.data.copy_(theirs.data)
        got, expected = flat(model(x)), flat(other(x))
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", BACKBONES)
def test_threads_with_different_sizes_give_the_sequential_outputs(name):
    model = build(name)
    inputs = [torch.randn(*shape) for shape in BACKBONES[name][4]]
    with torch.no_grad():
        expected = [flat(model(x)) for x in inputs]
    results, errors = {}, []

    def work(index):
        try:
            for repeat in range(4):
                with torch.no_grad():
                    results[(index, repeat)] = flat(model(inputs[index]))
        except Exception as error:   # reported below, with the thread's input
            errors.append((index, error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for (index, _), outputs in results.items():
        for a, b in zip(outputs, expected[index]):
            assert torch.equal(a, b)


class Outputs(torch.nn.Module):
    """The backbone's tensor outputs as a tuple (what tracing records)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return tuple(flat(self.model(image)))


@pytest.mark.parametrize("name", BACKBONES)
def test_trace_and_pickle(name):
    """No per-call patching: ``torch.jit.trace`` records the expedited forward (a traced
    model gives the eager outputs), and a pickled model gives the same outputs."""
    model = build(name)
    x = torch.randn(*BACKBONES[name][4][0])
    with torch.no_grad():
        expected = flat(model(x))
        traced = torch.jit.trace(Outputs(model), x, check_trace=False)
        for a, b in zip(traced(x), expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        copy = pickle.loads(pickle.dumps(model))
        for a, b in zip(flat(copy(x)), expected):
            assert torch.equal(a, b)


def test_the_repository_documents_itself():
    """Code and docs cite docs/method.md or the paper, never a document outside the repository."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    outside = "SP" + "EC"
    hits = [f for f in files if f.endswith((".py", ".md", ".txt", ".sh", "Makefile"))
            and outside in open(osp.join(ROOT, f), encoding="utf-8").read()]
    assert hits == []
    assert osp.exists(osp.join(ROOT, "docs", "method.md"))


@needs_fullgraph_compile
@pytest.mark.parametrize("name,changes", [
    ("swin", {}), ("swin", dict(cluster_padding=False)), ("swinv2", {}), ("vit", {}),
    ("mit", {}), ("pvtv2", {})])
def test_forward_compiles_into_one_graph(name, changes):
    """No per-call patching and shape-only index tables: dynamo traces the whole expedited
    forward without a graph break, and the compiled model gives the eager outputs."""
    import torch._dynamo
    torch._dynamo.reset()
    model = build(name, **changes)
    x = torch.randn(*BACKBONES[name][4][0])
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        for a, b in zip(flat(compiled(x)), flat(model(x))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("name,kwargs,match", [
    # validated although expediting is disabled (cluster_after=None)
    ("vit", dict(cluster_after=None, reconstruct_after=None, temperature=-1.0), "temperature must be a finite number > 0"),
    ("vit", dict(cluster_after=None, reconstruct_after=None, cluster_window=4), "cluster_window must be an odd int"),
    ("vit", dict(cluster_after=None, reconstruct_after=None, reducer=dict(type="Nope")), "reducer"),
    ("swin", dict(cluster_after=None, reconstruct_k=0), "reconstruct_k must be an int >= 1"),
    # another family's argument: pointed to the right one
    ("swin", dict(cluster_grid=0.7), "set clustered_window_size=k instead"),
    ("vit", dict(clustered_window_size=8), "ViT backbones take cluster_grid"),
    ("vit", dict(cluster_after=1, reconstruct_after=9), r"reconstruct_after must be an int in \[2, 4\]"),
    ("mit", dict(stage=4), r"stage must be an int in \[0, 3\]"),
    ("mit", dict(cluster_after=3), r"cluster_after must be an int in \[0, 2\] \(the number of "
                                   r"blocks of stage 2 before clustering"),
    ("mit", dict(attention_mask_shift="stock"), "blocks shift their windows"),
    ("mit", dict(reducer=dict(type="EViT")), "reducer"),
])
def test_bad_arguments_fail_at_build_naming_the_parameter(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(name, **kwargs)


def test_numpy_integers_are_accepted():
    import numpy as np
    model = build("vit", cluster_after=np.int64(1), reconstruct_after=np.int32(3),
                  cluster_grid=(np.int64(5), np.int64(5)), cluster_window=np.int16(3),
                  reconstruct_k=np.int64(4))
    assert model.cluster_after == 1 and type(model.cluster_after) is int
    assert model.clustering.grid == (5, 5) and model.reconstruction.k == 4
    swin = build("swin", stage=np.int64(2), cluster_after=np.int64(1),
                 clustered_window_size=np.int64(4))
    assert swin.clustered_window_size == 4 and swin.expedited
