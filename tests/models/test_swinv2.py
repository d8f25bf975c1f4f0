"""ExpeditedSwinV2 against mmpretrain's SwinTransformerV2 (docs/method.md §4.2).

The references here are written independently of expedite_mm: the per-window loops of
tests/helpers/naive_window.py, the continuous-position-bias coordinates written out from their
formula, and *stock* mmpretrain ``SwinBlockV2`` modules built for window k.
"""
import math
import warnings

import naive_window
import pytest
import torch

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedSwinV2; imports mmpretrain's backbones
from expedite_mm.ops import TokenClustering, TokenReconstruction
from harness import assert_stock_fallback_once
# after expedite_mm: without torchvision, mmpretrain.models only imports up to its backbones
from mmpretrain.models.backbones.swin_transformer_v2 import SwinBlockV2, SwinTransformerV2  # noqa: E402,I001
from mmpretrain.models.utils.attention import WindowMSAV2  # noqa: E402

PACKAGES = ["mmdet", "mmseg"]
# A tiny SwinV2 fine-tuned at window 8 from a window-6 pretraining (as the official
# SwinV2-L goes 12 -> 32): 6 blocks in the expedited third stage, window 8 -> 6 there.
TINY = dict(arch=dict(embed_dims=16, depths=[2, 2, 6, 2], num_heads=[1, 2, 2, 4],
                      extra_norm_every_n_blocks=0),
            window_size=[8, 8, 8, 4], pretrained_window_sizes=[6, 6, 6, 3],
            out_indices=(0, 1, 2, 3), pad_small_map=True, drop_path_rate=0.0)


def registry(package):
    import importlib
    return importlib.import_module(f"{package}.registry").MODELS


def build_pair(dtype=torch.float32, package="mmdet", tiny=TINY, **expedite):
    """mmpretrain's SwinTransformerV2 and an ExpeditedSwinV2 with the same random weights."""
    stock = SwinTransformerV2(**tiny).to(dtype)
    ours = registry(package).build(dict(type="ExpeditedSwinV2", **tiny, **expedite)).to(dtype)
    missing, unexpected = ours.load_state_dict(stock.state_dict(), strict=False)
    # mmpretrain's load hook drops the coordinate tables/indices: they are rebuilt, not loaded
    assert not unexpected and all("relative_" in key for key in missing)
    stock.eval()
    ours.eval()
    return stock, ours


# --------------------------------------------------------------------------- references
def naive_coords_table(k, normaliser):
    """SwinV2's log-spaced coordinates of a k x k window, from the paper's formula:
    f(d) = sign(d) * log2(1 + 8 |d| / normaliser) / log2(8), for (dy, dx) in [-(k-1), k-1]^2."""
    def f(d):
        t = 8.0 * d / normaliser
        return math.copysign(math.log2(1.0 + abs(t)), t) / 3.0 if d else 0.0
    rows = [[[f(dy), f(dx)] for dx in range(-(k - 1), k)] for dy in range(-(k - 1), k)]
    return torch.tensor(rows, dtype=torch.float64)[None]


def naive_bias(w_msa, k, normaliser):
    """The (heads, k*k, k*k) bias of window k: 16 * sigmoid(cpb_mlp(coords)) looked up per
    token pair (p, q) at offset (p - q), with the block's own MLP weights."""
    table = w_msa.cpb_mlp(naive_coords_table(k, normaliser).to(w_msa.logit_scale.dtype))
    table = table.view(2 * k - 1, 2 * k - 1, -1)
    heads = table.shape[-1]
    bias = torch.empty(heads, k * k, k * k, dtype=table.dtype)
    for p in range(k * k):
        for q in range(k * k):
            dy, dx = p // k - q // k, p % k - q % k
            bias[:, p, q] = table[dy + k - 1, dx + k - 1]
    return 16 * torch.sigmoid(bias)


def pretrained_window(block, tiny, stage):
    """The window the CPB coordinates are normalised by: the pretrained one, else K."""
    return tiny["pretrained_window_sizes"][stage] or tiny["window_size"][stage]


def window_k_block(block, k, pretrained):
    """The block as a *stock* mmpretrain SwinBlockV2 built for window k and normalising
    its coordinates by ``pretrained`` (mmpretrain computes its k-table and index itself)."""
    attn = block.attn
    new = SwinBlockV2(
        embed_dims=attn.w_msa.embed_dims, num_heads=attn.w_msa.num_heads, window_size=k,
        shift=attn.shift_size > 0, extra_norm=block.extra_norm,
        ffn_ratio=block.ffn.layers[0][0].out_features / attn.w_msa.embed_dims,
        pad_small_map=attn.pad_small_map, pretrained_window_size=pretrained)
    weights = {key: value for key, value in block.state_dict().items()
               if "relative_" not in key}
    missing, unexpected = new.load_state_dict(weights, strict=False)
    assert not unexpected and all("relative_" in key for key in missing)
    return new.to(block.attn.w_msa.logit_scale.dtype).eval()


def reference(stock, tiny, x, stage, cluster_after, reconstruct_after, k, clustering,
              reconstruction):
    """The method (docs/method.md §4.2) on the stock model: stock stages (patch merging first, SwinV2's
    layout); in the expedited stage, per-window clustering after ``cluster_after`` blocks
    (a loop over windows), the next blocks as stock window-k SwinV2 blocks on the clustered
    map, per-window reconstruction after ``reconstruct_after`` blocks."""
    K = tiny["window_size"][stage]
    x, hw = stock.patch_embed(x)
    outs = []
    for i, stage_module in enumerate(stock.stages):
        if stage_module.downsample:
            x, hw = stage_module.downsample(x, hw)
        if i != stage:
            for block in stage_module.blocks:
                x = block(x, hw)
        else:
            states = small_hw = None

            def cluster(x):
                centre_map, states = naive_window.cluster_per_window(x, hw, K, clustering)
                return centre_map.flatten(1, 2), states, tuple(centre_map.shape[1:3])

            if cluster_after == 0:
                x, states, small_hw = cluster(x)
            for number, block in enumerate(stage_module.blocks, start=1):
                if states is None:
                    x = block(x, hw)
                else:
                    small = window_k_block(block, k, pretrained_window(block, tiny, stage))
                    x = small(x, small_hw)
                if number == cluster_after:
                    x, states, small_hw = cluster(x)
                elif number == reconstruct_after:
                    x = naive_window.reconstruct_per_window(
                        x.view(x.shape[0], *small_hw, -1), states, hw, K, reconstruction)
                    states = None
        if i in stock.out_indices:
            out = getattr(stock, f"norm{i}")(x)
            outs.append(out.view(-1, *hw, out.shape[-1]).permute(0, 3, 1, 2))
    return outs


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("package", PACKAGES)
def test_registered_as_subclass_of_mmpretrain_swinv2(package):
    ours = registry(package).build(dict(type="ExpeditedSwinV2", **TINY, cluster_after=2))
    assert isinstance(ours, SwinTransformerV2) and ours.expedited
    # the stock class too (mmengine's scoped 'mmpretrain.SwinTransformerV2' needs torchvision)
    assert registry(package).get("SwinTransformerV2") is SwinTransformerV2


def run_clustered(ours, block, x, hw):
    """One block of the expedited stage as the clustered span runs it (window k, shift k//2)."""
    k = ours.clustered_window_size
    shift = k // 2 if block.attn.shift_size > 0 else 0
    return ours.stages[ours.expedited_stage].clustered_block(block, x, hw, k, shift, shift)


def test_disabled_is_bit_identical():
    stock, ours = build_pair()
    assert not ours.expedited
    x = torch.randn(2, 3, 150, 203)
    with torch.no_grad():
        expected, got = stock(x), ours(x)
    assert len(got) == 4
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


def test_state_dict_keys_equal_stock():
    stock, ours = build_pair(cluster_after=2, clustered_window_size=6)
    assert list(ours.state_dict()) == list(stock.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}


@pytest.mark.parametrize("K,pretrained,k", [(8, 6, 6), (8, 6, 3), (32, 12, 23), (8, 0, 5),
                                            (7, 12, 4)])
def test_window_k_coordinates_follow_the_formula(K, pretrained, k):
    """The coordinates a clustered block feeds its cpb_mlp: the formula for window k,
    normalised by the pretrained window (K itself where none is set); bit-identical to
    what mmpretrain computes for a window-k attention with that pretrained window."""
    from expedite_mm.models.window_attention import crop_coords_table
    stock_attn = WindowMSAV2(8, (K, K), 2, pretrained_window_size=(pretrained, pretrained))
    got = crop_coords_table(stock_attn.relative_coords_table, k)
    normaliser = (pretrained or K) - 1
    torch.testing.assert_close(got.double(), naive_coords_table(k, normaliser),
                               atol=1e-6, rtol=0)
    window_k = WindowMSAV2(8, (k, k), 2, pretrained_window_size=((pretrained or K),) * 2)
    assert torch.equal(got, window_k.relative_coords_table)
    if k == K:
        assert torch.equal(got, stock_attn.relative_coords_table)


@pytest.mark.parametrize("index", [2, 3])   # one plain block, one shifted
def test_clustered_block_is_the_stock_window_k_block(index):
    _, ours = build_pair(cluster_after=2, clustered_window_size=6)
    block = ours.stages[2].blocks[index]
    x = torch.randn(2, 12 * 18, 64)
    with torch.no_grad():
        expected = window_k_block(block, 6, pretrained=6)(x, (12, 18))
        got = run_clustered(ours, block, x, (12, 18))
        # the stock window-k block's bias is the formula's bias (checked independently)
        small = window_k_block(block, 6, pretrained=6)
        w = small.attn.w_msa
        table = w.cpb_mlp(w.relative_coords_table).view(-1, w.num_heads)
        stock_bias = 16 * torch.sigmoid(
            table[w.relative_position_index.view(-1)].view(36, 36, -1).permute(2, 0, 1))
        torch.testing.assert_close(stock_bias, naive_bias(block.attn.w_msa, 6, 5),
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, block(x, (12, 18)), atol=1e-3)   # window 6 != window 8


def test_window_k_equal_K_runs_the_stock_block():
    _, ours = build_pair(cluster_after=2, clustered_window_size=8)
    x = torch.randn(2, 16 * 24, 64)
    with torch.no_grad():
        for index, block in enumerate(ours.stages[2].blocks):
            assert torch.equal(run_clustered(ours, block, x, (16, 24)),
                               block(x, (16, 24)))


@pytest.mark.parametrize("stage,cluster_after,reconstruct_after,k,shape", [
    (2, 2, None, 6, (2, 3, 200, 264)),   # stage-3 map 13x17: padded to 16x24, 2x3 windows
    (2, 3, 5, 6, (1, 3, 256, 256)),      # odd alpha (next block shifted), early reconstruction
    (2, 0, 6, 5, (1, 3, 130, 250)),      # cluster before the first block, odd k
    (1, 1, 2, 6, (1, 3, 100, 140)),      # another stage
])
def test_matches_spec_reference(stage, cluster_after, reconstruct_after, k, shape):
    stock, ours = build_pair(torch.float64, stage=stage, cluster_after=cluster_after,
                             reconstruct_after=reconstruct_after, clustered_window_size=k,
                             cluster_window=3, temperature=20.0, reconstruct_k=6,
                             reconstruct_normalize="l2")
    depth = TINY["arch"]["depths"][stage]
    clustering = TokenClustering((k, k), window=3, temperature=20.0)
    reconstruction = TokenReconstruction(k=6, temperature=20.0, normalize="l2")
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        ref = reference(stock, TINY, x, stage, cluster_after, reconstruct_after or depth, k,
                        clustering, reconstruction)
        outs = ours(x)
        plain = stock(x)
    assert len(outs) == len(ref) == 4
    for a, b, c in zip(outs, ref, plain):
        assert a.shape == b.shape == c.shape
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert torch.equal(outs[0], plain[0])                      # before the expedited stage
    assert not torch.allclose(outs[3], plain[3], atol=1e-3)    # expediting did something


def test_without_pretrained_window_normalises_by_the_model_window():
    """pretrained_window_sizes 0: the weights were trained at window K, so window k's
    coordinates are normalised by K - 1 (mmpretrain's own normalisation at K)."""
    tiny = {**TINY, "pretrained_window_sizes": [0, 0, 0, 0]}
    stock, ours = build_pair(torch.float64, tiny=tiny, cluster_after=2,
                             clustered_window_size=5, cluster_window=3)
    x = torch.randn(1, 3, 192, 256, dtype=torch.float64)
    with torch.no_grad():
        ref = reference(stock, tiny, x, 2, 2, 6, 5, TokenClustering((5, 5), window=3),
                        TokenReconstruction(k=10))
        outs = ours(x)
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape,cluster_padding", [
    ((2, 3, 400, 584), False),   # stage-3 map 25x37: padded it would be 23x46 centres (more)
    ((1, 3, 800, 1040), True),   # 50x65: 2x3 windows padded to 64x96 -> 46x69 centres
])
def test_shapes_equal_stock_with_the_paper_window(shape, cluster_padding):
    """All four outputs, odd sizes, window 32 -> 23 in stage 3 (tiny widths)."""
    tiny = dict(arch=dict(embed_dims=8, depths=[1, 1, 3, 1], num_heads=[1, 1, 1, 1],
                          extra_norm_every_n_blocks=0),
                window_size=[32, 32, 32, 16], pretrained_window_sizes=[12, 12, 12, 6],
                out_indices=(0, 1, 2, 3), pad_small_map=True, drop_path_rate=0.0)
    stock = SwinTransformerV2(**tiny)
    ours = registry("mmdet").build(dict(type="ExpeditedSwinV2", **tiny, cluster_after=1,
                                        clustered_window_size=23, cluster_window=7,
                                        cluster_padding=cluster_padding))
    ours.load_state_dict(stock.state_dict(), strict=False)
    stock.eval()
    ours.eval()
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # no fallback here
        with torch.no_grad():
            expected = stock(x)
            got = ours(x)
    assert [o.shape for o in got] == [o.shape for o in expected], shape
    assert got[2].shape[2:] == (-(-shape[2] // 16), -(-shape[3] // 16))
    assert torch.equal(got[1], expected[1]) and not torch.allclose(got[2], expected[2])


def test_parameters_and_state_dict_untouched_and_gradients_reach_the_cpb():
    _, ours = build_pair(cluster_after=1, clustered_window_size=6)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    params_before = dict(ours.named_parameters())
    x = torch.randn(1, 3, 224, 224)          # stage-3 map 14x14 -> 12x12 centres
    with torch.no_grad():
        ours(x)
    ours(x)[3].sum().backward()
    after = ours.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    params_after = dict(ours.named_parameters())
    assert all(params_after[n] is params_before[n] for n in params_before)
    cpb = ours.stages[2].blocks[3].attn.w_msa.cpb_mlp[0].weight
    assert cpb.grad is not None and cpb.grad.abs().sum() > 0
    assert ours.stages[2].blocks[3].attn.w_msa.relative_coords_table.shape == (1, 15, 15, 2)


def test_new_weights_take_effect():
    """load_state_dict writes the cpb_mlp in place: the next forward uses the new MLP."""
    stock, ours = build_pair(torch.float64, cluster_after=2, clustered_window_size=6,
                             cluster_window=3)
    x = torch.randn(1, 3, 128, 192, dtype=torch.float64)
    with torch.no_grad():
        first = ours(x)
        other = SwinTransformerV2(**TINY).double()
        other.eval()      # (mmpretrain's SwinTransformerV2.train returns None: no chaining)
        ours.load_state_dict(other.state_dict(), strict=False)
        new = ours(x)
        ref = reference(other, TINY, x, 2, 2, 6, 6, TokenClustering((6, 6), window=3),
                        TokenReconstruction(k=10))
    assert not torch.allclose(first[3], new[3])
    for a, b in zip(new, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_checkpointed_blocks_give_the_same_gradients():
    _, plain = build_pair(cluster_after=2, clustered_window_size=6)
    cp = registry("mmdet").build(dict(type="ExpeditedSwinV2", **TINY, with_cp=True,
                                      cluster_after=2, clustered_window_size=6))
    cp.load_state_dict(plain.state_dict(), strict=False)
    cp.eval()
    x = torch.randn(1, 3, 128, 160)
    grads = []
    for model in (plain, cp):
        model.zero_grad()
        inputs = x.clone().requires_grad_(True)
        sum(o.square().sum() for o in model(inputs)).backward()
        grads.append((inputs.grad, model.stages[2].blocks[4].attn.w_msa.cpb_mlp[0].weight.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_small_input_falls_back_with_one_warning():
    stock, ours = build_pair(cluster_after=2, clustered_window_size=6)
    x = torch.randn(1, 3, 64, 80)                                # stage-3 map 4x5 < 6x6
    assert_stock_fallback_once(stock, ours, x)


@pytest.mark.parametrize("kwargs,name", [
    (dict(cluster_after=2, stage=4), "stage"),
    (dict(cluster_after=6), "cluster_after"),
    (dict(stage=0, cluster_after=2), "cluster_after"),
    (dict(cluster_after=2, reconstruct_after=7), "reconstruct_after"),
    (dict(reconstruct_after=4), "reconstruct_after"),
    (dict(cluster_after=2, clustered_window_size=9), "clustered_window_size"),
    (dict(stage=3, cluster_after=1, clustered_window_size=5), "clustered_window_size"),
    (dict(cluster_after=2, cluster_window=4), "cluster_window"),
    (dict(cluster_after=2, temperature=0.0), "temperature"),
])
def test_bad_arguments_raise_at_build(kwargs, name):
    with pytest.raises(ValueError, match=name):
        registry("mmdet").build(dict(type="ExpeditedSwinV2", **TINY, **kwargs))


def test_defaults_use_the_expedited_stage_window():
    ours = registry("mmdet").build(dict(type="ExpeditedSwinV2", **{
        **TINY, "window_size": [8, 8, 32, 4], "pretrained_window_sizes": [0, 0, 12, 0]},
        cluster_after=2))
    assert (ours.expedited_stage, ours.window_size) == (2, 32)
    assert ours.clustered_window_size == round(0.7 * 32) and ours.reconstruct_after == 6
    assert ours.clustering.grid == (22, 22) and ours.reconstruction.k == 10


def test_official_imagenet_checkpoint_loads_through_init_cfg(tmp_path):
    """The configs' init_cfg path: an mmpretrain classifier checkpoint (``backbone.*`` and
    ``head.*`` keys, numpy metadata) pre-trained at window 6 initialises a window-8
    ExpeditedSwinV2 unmodified; only the rebuilt window buffers differ from it."""
    import numpy as np
    pretraining = {**TINY, "window_size": [6, 6, 6, 3], "pretrained_window_sizes": [0] * 4}
    source = SwinTransformerV2(**pretraining)
    state = {f"backbone.{key}": value for key, value in source.state_dict().items()}
    state["head.fc.weight"] = torch.randn(10, 128)
    path = tmp_path / "swinv2_in21k.pth"
    torch.save({"meta": {"epoch": np.int64(90), "mmcls_version": "0.23.1"},
                "state_dict": state}, path)

    ours = registry("mmdet").build(dict(
        type="ExpeditedSwinV2", **TINY, cluster_after=2, clustered_window_size=6,
        init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone.")))
    from expedite_mm.apis.checkpoint import checkpoint_policy
    with checkpoint_policy():            # the numpy metadata needs the allow-list
        ours.init_weights()
    loaded, expected = ours.state_dict(), source.state_dict()
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        if key.endswith(("relative_coords_table", "relative_position_index")):
            assert loaded[key].shape != value.shape       # window 8's, not the checkpoint's
        else:
            assert torch.equal(loaded[key], value), key
