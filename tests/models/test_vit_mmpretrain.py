"""ExpeditedVisionTransformer against mmpretrain's VisionTransformer (docs/method.md §4.4):
the disabled path, clustering only (Expedit-SWAG), clustering with reconstruction, EViT
and ToMe as Expedit-SWAG ran them, each against a re-derivation written here or in
tests/naive*.py."""
import math
import threading

import pytest
import torch

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedVisionTransformer
import naive
import naive_classification as nc
from expedite_mm.core.args import CLASSIFICATION_VIT
from expedite_mm.models.vit_mmpretrain import ExpeditedVisionTransformer, VisionTransformer
from expedite_mm.ops import TokenClustering, TokenReconstruction
from harness import assert_stock_fallback_once

ARCH = dict(embed_dims=32, num_layers=6, num_heads=4, feedforward_channels=64)
SMALL = dict(arch=ARCH, img_size=64, patch_size=8)   # 8x8 tokens at 64x64
STOCK_KEYS = {"out_type", "with_cls_token", "final_norm", "out_indices", "pre_norm"}


def build_pair(dtype=torch.float32, **kwargs):
    """A stock mmpretrain ViT and ours with the same random weights, in eval mode."""
    stock = VisionTransformer(**SMALL, **{k: v for k, v in kwargs.items() if k in STOCK_KEYS})
    with torch.no_grad():                      # init_weights leaves the norms at (1, 0)
        for name, param in stock.named_parameters():
            if "ln" in name:
                param.add_(0.2 * torch.randn_like(param))
    ours = ExpeditedVisionTransformer(**SMALL, **kwargs)
    ours.load_state_dict(stock.state_dict())
    for model in (stock, ours):
        model.to(dtype)
        model.eval()      # mmpretrain's backbones' train() returns None: no chaining
    return stock, ours


def images(batch=2, hw=(72, 56), dtype=torch.float32):
    return torch.randn(batch, 3, *hw, dtype=dtype)   # 9x7 tokens: odd, non-square


# --------------------------------------------------------------------------- disabled
@pytest.mark.parametrize("out_type,with_cls_token,out_indices", [
    ("cls_token", True, -1), ("featmap", True, [1, 3, 5]), ("avg_featmap", True, -1),
    ("raw", True, [2, 5]), ("featmap", False, -1), ("avg_featmap", False, [0, 5])])
def test_disabled_is_bit_identical(out_type, with_cls_token, out_indices):
    kwargs = dict(out_type=out_type, with_cls_token=with_cls_token, out_indices=out_indices)
    stock, ours = build_pair(**kwargs)
    x = images()
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)
    assert not ours.expedited


@pytest.mark.parametrize("kwargs", [dict(cluster_after=2, cluster_grid=(4, 4)),
                                    dict(layerwise_reducer=dict(type="ToMe", r=4))])
def test_state_dict_keys_equal_stock(kwargs):
    stock, ours = build_pair(**kwargs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    assert list(ours.state_dict()) == list(stock.state_dict())


# --------------------------------------------------------------------------- clustering
@pytest.mark.parametrize("cluster_after,grid,window,temperature", [
    (2, (4, 3), 5, 1.0), (0, (5, 5), 3, 1.0), (5, (3, 3), 3, 50.0)])
def test_cluster_only_matches_naive(cluster_after, grid, window, temperature):
    """Layers 1..a, the naive EM (float64, dense masks) on the patch tokens, the other
    layers and the final norm on class token + centres; the class token is the output."""
    stock, ours = build_pair(torch.float64, cluster_after=cluster_after, cluster_grid=grid,
                             cluster_window=window, temperature=temperature)
    x = images(dtype=torch.float64)
    with torch.no_grad():
        (out,) = ours(x)
        for b in range(x.shape[0]):
            tokens = nc.embed(stock, x[b])
            for number, layer in enumerate(stock.layers, start=1):
                if number == cluster_after + 1:
                    centers = naive.cluster(tokens[1:], (9, 7), grid, window, 5, temperature)
                    tokens = torch.cat([tokens[:1], centers])
                tokens = layer(tokens[None])[0]
            expected = stock.ln1(tokens)[0]
            torch.testing.assert_close(out[b], expected, rtol=1e-9, atol=1e-9)


def test_release_setting_defaults():
    """Expedit-SWAG's clustering settings are the family's defaults: tau 1, window 5,
    5 iterations, no reconstruction."""
    args = CLASSIFICATION_VIT.parse(dict(cluster_after=12))
    assert (args.temperature, args.cluster_window, args.cluster_iters,
            args.classification.reconstruct) == \
        (1.0, 5, 5, False)
    _, ours = build_pair(cluster_after=2, cluster_grid=(4, 4))
    assert ours.reconstruct_after is None and ours.clustering.temperature == 1.0


@pytest.mark.parametrize("out_type", ["featmap", "avg_featmap", "raw", "cls_token"])
def test_cluster_with_reconstruction_matches_reference(out_type):
    """reconstruct=True: clustering after layer 2, reconstruction after layer 4, every
    output at full resolution (one inside the span reconstructed with the same weights)."""
    stock, ours = build_pair(cluster_after=2, reconstruct_after=4, reconstruct=True,
                             cluster_grid=(4, 4), temperature=20.0, out_type=out_type,
                             out_indices=[2, 3, 5])
    clustering = TokenClustering((4, 4), window=5, iters=5, temperature=20.0)
    reconstruction = TokenReconstruction(k=20, temperature=20.0)
    x = images()
    with torch.no_grad():
        outs = ours(x)
        tokens, hw = stock.patch_embed(x)
        h = torch.cat([stock.cls_token.expand(2, -1, -1), tokens], 1)
        h = h + stock.resize_pos_embed(stock.pos_embed, stock.patch_resolution, hw,
                                       mode="bicubic", num_extra_tokens=1)
        expected, state = [], None
        for number, layer in enumerate(stock.layers, start=1):
            h = layer(h)
            if number == 6:
                h = stock.ln1(h)
            if number == 4:
                h = torch.cat([h[:, :1], reconstruction(h[:, 1:], state)], 1)
                state = None
            if number - 1 in (2, 3, 5):
                full = h if state is None else torch.cat(
                    [h[:, :1], reconstruction(h[:, 1:], state)], 1)
                expected.append(stock._format_output(full, hw))
            if number == 2:
                centers, state = clustering(h[:, 1:], hw)
                h = torch.cat([h[:, :1], centers], 1)
    assert len(outs) == 3
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if out_type == "featmap":
        assert outs[-1].shape == (2, 32, 9, 7)


@pytest.mark.parametrize("reducer", [dict(type="AvgPool"), dict(type="EViT", fuse=True),
                                     dict(type="ToMe")])
def test_one_shot_reducers_cluster_only(reducer):
    """The paper's one-place baselines at the same budget, class token read from the
    reduced tokens: layers 1-3, the reducer (guided by layer 4's attention), layers 4-6."""
    from expedite_mm.ops.reducers import attention_guide, build_reduction
    stock, ours = build_pair(cluster_after=3, cluster_grid=(4, 3), reducer=reducer)
    _, module, _, _ = build_reduction(reducer, None, (4, 3), dict(window=5, iters=5,
                                                                  temperature=1.0),
                                      dict(k=20, temperature=1.0, normalize="sum",
                                           neighbours="global", ties="exact"))
    x = images()
    with torch.no_grad():
        (out,) = ours(x)
        tokens, hw = stock.patch_embed(x)
        h = torch.cat([stock.cls_token.expand(2, -1, -1), tokens], 1)
        h = h + stock.resize_pos_embed(stock.pos_embed, stock.patch_resolution, hw,
                                       mode="bicubic", num_extra_tokens=1)
        for number, layer in enumerate(stock.layers, start=1):
            if number == 4:
                attn = layer.attn
                guide = attention_guide(layer.ln1(h), attn.qkv.weight, attn.qkv.bias,
                                        attn.num_heads, module.needs, True)
                reduced, _ = module(h[:, 1:], hw, **guide)
                assert reduced.shape[1] == 12
                h = torch.cat([h[:, :1], reduced], 1)
            h = layer(h)
        torch.testing.assert_close(out, stock.ln1(h)[:, 0], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- EViT / ToMe
@pytest.mark.parametrize("keep_rate,layers,fuse,score", [
    (0.7, (2, 4, 5), True, "mean_attention"), (0.5, (1,), False, "mean_attention"),
    (0.6, (3, 6), True, "cls_attention")])
def test_evit_matches_naive(keep_rate, layers, fuse, score):
    stock, ours = build_pair(torch.float64, layerwise_reducer=dict(
        type="EViT", keep_rate=keep_rate, layers=layers, fuse_token=fuse, score=score))
    x = images(dtype=torch.float64)
    with torch.no_grad():
        (out,) = ours(x)
        for b in range(2):
            expected = nc.classify_evit(stock, x[b], keep_rate, layers, fuse, score)
            torch.testing.assert_close(out[b], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("r,proportional", [(4, True), (9, True), ([20, 0, 3], True), (6, False)])
def test_tome_matches_naive(r, proportional):
    stock, ours = build_pair(torch.float64, layerwise_reducer=dict(
        type="ToMe", r=r, proportional_attention=proportional))
    x = images(dtype=torch.float64)
    with torch.no_grad():
        (out,) = ours(x)
        for b in range(2):
            if isinstance(r, list):
                expected = _tome_schedule(stock, x[b], r + [0] * 3)
            else:
                expected = nc.classify_tome(stock, x[b], r, proportional)
            torch.testing.assert_close(out[b], expected, rtol=1e-9, atol=1e-9)


def _tome_schedule(model, image, schedule):
    x = nc.embed(model, image)
    size = torch.ones(x.shape[0], dtype=torch.float64)
    for layer, r in zip(model.layers, schedule):
        out, _, keys = nc.attention(layer, x, size)
        x = x + out
        x, size = nc.tome_merge(x, keys, size, r)
        x = nc.mlp(layer, x)
    return nc.layer_norm(x, model.ln1)[0]


def _tokens_per_layer(model, x):
    """How many tokens (class token included) enter every layer (seen by its first norm:
    reducing layers are computed from their submodules, not called)."""
    seen = []
    hooks = [layer.ln1.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
             for layer in model.layers]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_token_counts_follow_the_release():
    """EViT keeps ceil(rate * n) of the n non-class tokens (+1 fused token, which counts
    among the n of the next dropping layer): the rate compounds. ToMe removes
    min(r, (n - 1) // 2) tokens per layer."""
    _, ours = build_pair(layerwise_reducer=dict(type="EViT", keep_rate=0.7, layers=(2, 4)))
    n1 = math.ceil(0.7 * 64) + 1
    n2 = math.ceil(0.7 * n1) + 1
    assert _tokens_per_layer(ours, images(1, (64, 64))) == [65, 65, 1 + n1, 1 + n1, 1 + n2,
                                                             1 + n2]
    _, ours = build_pair(layerwise_reducer=dict(type="ToMe", r=20))
    expected, n = [], 65
    for _ in range(6):
        expected.append(n)
        n -= min(20, (n - 1) // 2)
    assert expected == [65, 45, 25, 13, 7, 4]
    assert _tokens_per_layer(ours, images(1, (64, 64))) == expected


# --------------------------------------------------------------------------- robustness
def test_batched_equals_one_by_one_and_threads():
    """Every image is reduced on its own (a batch gives what single images give), and two
    threads calling one model with different input sizes get their own results."""
    for kwargs in (dict(cluster_after=2, cluster_grid=(4, 4)),
                   dict(layerwise_reducer=dict(type="EViT", keep_rate=0.5, layers=(2, 3))),
                   dict(layerwise_reducer=dict(type="ToMe", r=7))):
        _, ours = build_pair(**kwargs)
        x = images(3)
        with torch.no_grad():
            (batched,) = ours(x)
            singles = torch.cat([ours(x[i:i + 1])[0] for i in range(3)])
        torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)
        inputs = [images(1, (72, 56)), images(2, (64, 96))]
        with torch.no_grad():
            expected = [ours(t)[0] for t in inputs]
        results = [None, None]

        def run(i):
            with torch.no_grad():
                for _ in range(3):
                    results[i] = ours(inputs[i])[0]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a, b in zip(results, expected):
            assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs", [dict(cluster_after=2, cluster_grid=(4, 4)),
                                    dict(layerwise_reducer=dict(type="EViT", keep_rate=0.5)),
                                    dict(layerwise_reducer=dict(type="ToMe", r=5))])
def test_grad_modes(kwargs):
    """Inference mode, then autograd on the same shapes: gradients reach the weights."""
    _, ours = build_pair(**kwargs)
    x = images()
    with torch.inference_mode():
        ours(x)
    (out,) = ours(x)
    out.square().sum().backward()
    grad = ours.layers[0].attn.qkv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_small_input_falls_back_once():
    stock, ours = build_pair(cluster_after=2, cluster_grid=(6, 6))
    assert_stock_fallback_once(stock, ours, images(1, (40, 64)))   # 5x8 tokens < 6x6


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,match", [
    (dict(cluster_after=2, out_type="featmap"), "out_type='featmap' needs every patch token"),
    (dict(layerwise_reducer=dict(type="ToMe", r=2), out_type="avg_featmap"), "out_type"),
    (dict(cluster_after=2, reconstruct_after=4), "reconstruct_after is set but reconstruct=False"),
    (dict(cluster_after=2, layerwise_reducer=dict(type="ToMe", r=2)), "both set"),
    (dict(layerwise_reducer=dict(type="ToMe", r=2), reducer=dict(type="AvgPool")),
     "replaces the reducer"),
    (dict(layerwise_reducer=dict(type="EViT", layers=(0, 3))), r"layerwise_reducer.layers"),
    (dict(layerwise_reducer=dict(type="EViT", layers=(7,))), r"\[1, 6\]"),
    (dict(layerwise_reducer=dict(type="EViT", keep_rate=1.5)), "keep_rate"),
    (dict(layerwise_reducer=dict(type="EViT", score="norm")), "score"),
    (dict(layerwise_reducer=dict(type="ToMe", r=-1)), "r must be"),
    (dict(layerwise_reducer=dict(type="ToMe", r=[1] * 7)), "at most 6"),
    (dict(layerwise_reducer=dict(type="ToMe", r=2, metric="tokens")), "unknown option"),
    (dict(layerwise_reducer=dict(type="Cluster")), "type must be one of"),
    (dict(cluster_after=6), r"cluster_after must be an int in \[0, 5\]"),
    (dict(cluster_after=2, reconstruct="yes"), "reconstruct must be True or False"),
    (dict(cluster_after=2, clustered_window_size=4), "clustered_window_size is not an argument"),
])
def test_bad_arguments_raise_at_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExpeditedVisionTransformer(**SMALL, **kwargs)


def test_dense_backbones_refuse_classification_arguments():
    from mmseg.registry import MODELS
    with pytest.raises(ValueError, match="classification backbones"):
        MODELS.build(dict(type="ExpeditedViT", img_size=(32, 32), embed_dims=16, num_layers=2,
                          num_heads=2, cluster_after=1, reconstruct=False))
