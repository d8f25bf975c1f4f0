"""ExpeditedBEiT / ExpeditedMAE against mmseg's BEiT and MAE (docs/method.md §4.5).

The reference runs the *stock* layers: the dense ones as they are, the clustered ones as
stock ``BEiTTransformerEncoderLayer`` modules built for the h x w centre grid, holding the
same weights and a bias table read from the stock one at the centres' offsets by a
bilinear interpolation written out here; clustering and reconstruction are
tests/helpers/naive.py's float64 re-derivations.
"""
import math
import warnings

import naive
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.models.backbones import BEiT, MAE
from mmseg.models.backbones.beit import BEiTTransformerEncoderLayer
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedBEiT, ExpeditedMAE
from expedite_mm.models.beit import centre_bias
from harness import assert_stock_fallback_once

# 8x10 tokens (the pre-training grid: BEiT's bias tables and MAE's positions are fixed to it)
SMALL = dict(img_size=(64, 80), patch_size=8, embed_dims=32, num_layers=4, num_heads=2,
             mlp_ratio=2, out_indices=(0, 1, 2, 3), norm_cfg=dict(type="LN", eps=1e-6),
             init_values=0.5)
OPS = dict(cluster_window=3, cluster_iters=3, temperature=4.0, reconstruct_k=6)
FAMILIES = [(BEiT, "ExpeditedBEiT"), (MAE, "ExpeditedMAE")]


def build_pair(stock_class, name, dtype=torch.float64, **expedite):
    """The stock backbone and ours with the same random weights (position tables and the
    class token drawn too: stock init leaves them near zero), in eval mode."""
    init_default_scope("mmseg")
    torch.manual_seed(0)
    stock = stock_class(**SMALL)
    with torch.no_grad():
        for key, param in stock.named_parameters():
            if any(part in key for part in ("relative_position_bias_table", "pos_embed",
                                            "cls_token", "gamma")):
                param.normal_(0, 0.5)
    ours = MODELS.build(dict(type=name, **SMALL, **expedite))
    ours.load_state_dict(stock.state_dict())
    for model in (stock, ours):
        model.to(dtype)
        model.eval()          # (mmseg's backbones' train() returns None: no chaining)
    return stock, ours


def naive_bias(attention, hw, grid):
    """(heads, 1 + M, 1 + M): centre (a, b) at ((a + 1/2) H/h - 1/2, (b + 1/2) W/w - 1/2);
    the bias of two centres is the table's bilinear value at their offset (token units);
    the class-token rows are the table's last three."""
    (H, W), (h, w) = hw, grid
    Wh, Ww = attention.window_size
    table = attention.relative_position_bias_table.detach().double()
    image = table[:-3].view(2 * Wh - 1, 2 * Ww - 1, -1)

    def lerp(y, x):
        y0, x0 = math.floor(y), math.floor(x)
        fy, fx = y - y0, x - x0
        value = 0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if wy and wx:
                    value = value + wy * wx * image[y0 + dy, x0 + dx]
        return value

    M = h * w
    bias = torch.empty(M + 1, M + 1, table.shape[1], dtype=torch.float64)
    for p in range(M):
        for q in range(M):
            (a1, b1), (a2, b2) = divmod(p, w), divmod(q, w)
            bias[p + 1, q + 1] = lerp((a1 - a2) * H / h + Wh - 1, (b1 - b2) * W / w + Ww - 1)
    bias[0, 1:], bias[1:, 0], bias[0, 0] = table[-3], table[-2], table[-1]
    return bias.permute(2, 0, 1)


def centre_layer(layer, grid, bias):
    """``layer`` as a stock BEiT layer built for an h x w window whose (index-gathered)
    bias is ``bias``: its table holds the bias of every offset, its index picks them."""
    attn = layer.attn
    new = BEiTTransformerEncoderLayer(
        embed_dims=attn.embed_dims, num_heads=attn.num_heads,
        feedforward_channels=layer.ffn.feedforward_channels, bias=attn.bias,
        window_size=grid, init_values=1.0, norm_cfg=dict(type="LN", eps=1e-6))
    weights = layer.state_dict()
    M = grid[0] * grid[1]
    # one table row per (query, key) pair of the 1 + M tokens: the index is the identity
    weights["attn.relative_position_bias_table"] = bias.permute(1, 2, 0).reshape(-1, bias.shape[0])
    weights["attn.relative_position_index"] = torch.arange((M + 1) ** 2).view(M + 1, M + 1)
    new.attn.relative_position_bias_table = torch.nn.Parameter(
        torch.zeros_like(weights["attn.relative_position_bias_table"]))
    new.load_state_dict(weights)
    return new.to(bias.dtype).eval()


def reference(stock, x, cluster_after, grid, window, iters, temperature, k):
    """docs/method.md §4 with the stock layers: dense layers 1..alpha, clustering, the
    stock layers rebuilt for the centre grid, reconstruction after the last layer, taps
    inside the span reconstructed."""
    tokens, hw = stock.patch_embed(x)
    B = x.shape[0]
    x = torch.cat([stock.cls_token.expand(B, -1, -1), tokens], 1)
    if isinstance(stock, MAE):
        x = x + stock.pos_embed
    outs, z, centres = [], None, None

    def restore(x):
        return torch.cat([x[:, :1], torch.stack([naive.reconstruct(
            z[b], centres[b], x[b, 1:], k, temperature) for b in range(B)])], 1)

    for number, layer in enumerate(stock.layers, start=1):
        if z is None:
            x = layer(x)
        else:
            x = centre_layer(layer, grid, naive_bias(layer.attn, hw, grid))(x)
        full = x if z is None else restore(x)
        if number - 1 in stock.out_indices:
            outs.append(full[:, 1:].transpose(1, 2).reshape(B, -1, *hw))
        if number == cluster_after:
            z = x[:, 1:]
            centres = torch.stack([naive.cluster(z[b], hw, grid, window, iters, temperature)
                                   for b in range(B)])
            x = torch.cat([x[:, :1], centres], 1)
    return outs


@pytest.mark.parametrize("stock_class,name", FAMILIES)
def test_disabled_is_bit_identical_with_the_stock_keys(stock_class, name):
    stock, ours = build_pair(stock_class, name, dtype=torch.float32)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)
    assert not ours.expedited
    assert list(ours.state_dict()) == list(stock.state_dict())


@pytest.mark.parametrize("stock_class,name", FAMILIES)
def test_expedited_matches_the_stock_layers_on_the_centres(stock_class, name):
    stock, ours = build_pair(stock_class, name, cluster_after=1, cluster_grid=(5, 6), **OPS)
    assert list(ours.state_dict()) == list(stock.state_dict())
    x = torch.randn(2, 3, 64, 80, dtype=torch.float64)
    with torch.no_grad():
        out = ours(x)
        expected = reference(stock, x, 1, (5, 6), 3, 3, 4.0, 6)
    assert len(out) == 4
    torch.testing.assert_close(out[0], stock(x)[0], rtol=0, atol=0)   # before clustering
    for a, b in zip(out, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_centre_bias_reads_the_table_at_the_centres_offsets():
    stock, _ = build_pair(BEiT, "ExpeditedBEiT")
    attention = stock.layers[0].attn
    for grid in ((5, 6), (3, 7), (8, 10)):
        torch.testing.assert_close(centre_bias(attention, (8, 10), grid),
                                   naive_bias(attention, (8, 10), grid), rtol=1e-12, atol=1e-12)
    # the full grid gives back the stock layer's own bias, exactly
    Wh, Ww = attention.window_size
    stock_bias = attention.relative_position_bias_table[
        attention.relative_position_index.view(-1)].view(Wh * Ww + 1, Wh * Ww + 1, -1)
    assert torch.equal(centre_bias(attention, (8, 10), (8, 10)), stock_bias.permute(2, 0, 1))


@pytest.mark.parametrize("stock_class,name", FAMILIES)
def test_gradients_flow_to_the_bias_tables_and_weights_stay(stock_class, name):
    _, ours = build_pair(stock_class, name, dtype=torch.float32, cluster_after=1,
                         cluster_grid=(5, 6), **OPS)
    before = {key: value.clone() for key, value in ours.state_dict().items()}
    with torch.inference_mode():
        ours(torch.randn(1, 3, 64, 80))
    ours(torch.randn(1, 3, 64, 80))[-1].square().sum().backward()
    table = ours.layers[2].attn.relative_position_bias_table       # a clustered layer
    assert table.grad is not None and table.grad.abs().sum() > 0
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_small_input_falls_back_and_bad_arguments_raise():
    stock, ours = build_pair(BEiT, "ExpeditedBEiT", dtype=torch.float32, cluster_after=1,
                             cluster_grid=(8, 10))
    assert_stock_fallback_once(stock, ours, torch.randn(1, 3, 64, 80))   # 8x10 -> 8x10
    init_default_scope("mmseg")
    for kwargs, match in ((dict(cluster_after=4), "cluster_after"),
                          (dict(cluster_after=1, cluster_grid=0), "cluster_grid"),
                          (dict(cluster_after=1, reducer=dict(type="EViT")), "not available"),
                          (dict(cluster_after=1, clustered_window_size=4), "not an argument")):
        with pytest.raises(ValueError, match=match):
            MODELS.build(dict(type="ExpeditedBEiT", **SMALL, **kwargs))


UPERNET = {   # config: (stock backbone type, input size)
    "configs/beit/upernet_beit-b16_expedite-a4-28x28_ade20k-640x640.py": ("BEiT", (128, 128)),
    "configs/mae/upernet_mae-b16_expedite-a4-22x22_ade20k-512x512.py": ("MAE", (128, 128)),
    "configs/upernet/upernet_vit-b16-mln_expedite-a6-24x24_ade20k-512x512.py":
        ("VisionTransformer", (96, 112)),
    "configs/upernet/upernet_deit-s16-mln_expedite-a6-24x24_ade20k-512x512.py":
        ("VisionTransformer", (96, 112)),
}


@pytest.mark.parametrize("path", sorted(UPERNET))
def test_upernet_configs_are_the_stock_models_when_disabled(path):
    """The shipped UPerNet configs (at tiny widths, so that it is fast): the state-dict
    keys are those of the stock segmentor (mmseg's released checkpoints load unmodified),
    expediting disabled computes the stock segmentor's logits bit for bit, and expedited
    (taps inside the span reconstructed) it computes others of the same shape."""
    from expedite_mm.apis.config import build_model, disable_expedite, load_config
    stock_type, shape = UPERNET[path]
    width = 64
    options = {"model.backbone.num_layers": 4, "model.backbone.embed_dims": width,
               "model.backbone.num_heads": 2, "model.backbone.out_indices": [0, 1, 2, 3],
               "model.backbone.cluster_after": 1, "model.backbone.cluster_grid": 0.6,
               "model.decode_head.in_channels": [width] * 4, "model.decode_head.channels": 32,
               "model.auxiliary_head.in_channels": width}
    if stock_type == "VisionTransformer":
        options.update({"model.neck.in_channels": [width] * 4, "model.neck.out_channels": width})
    else:
        options.update({"model.neck.embed_dim": width, "model.backbone.img_size": shape})
    cfg = load_config(path, options)
    stock_cfg = load_config(path, options)
    stock_cfg.model.backbone.type = stock_type
    for key in ("cluster_after", "cluster_grid"):
        stock_cfg.model.backbone.pop(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = build_model(stock_cfg)
        ours, disabled = build_model(cfg), build_model(disable_expedite(cfg))
    assert list(ours.state_dict()) == list(stock.state_dict())
    for model in (ours, disabled):
        model.load_state_dict(stock.state_dict())
    x = torch.randn(1, 3, *shape)
    with torch.no_grad():
        expected = stock._forward(x)
        assert torch.equal(disabled._forward(x), expected)
        out = ours._forward(x)
    assert out.shape == expected.shape and torch.isfinite(out).all()
    assert not torch.equal(out, expected)
