"""The paper's comparisons (expedite_mm.ops.reducers) against naive re-derivations written here,
and selected through ExpeditedViT's ``reducer`` / ``reconstructor`` config keys."""
import math

import pytest
import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedViT
from expedite_mm.ops import GRID_REDUCERS, TokenClustering, TokenReconstruction, build_reduction
from expedite_mm.ops.reducers import (AdaptiveAvgPoolReduction, AttentiveTokenKeeping,
                                      BilinearReconstruction, BipartiteMerging,
                                      ScatterReconstruction, UnmergeReconstruction,
                                      attention_guide)
from expedite_mm.analysis.flops import count_flops
from harness import assert_stock_fallback_once

CLUSTER = dict(window=5, iters=5, temperature=50.0)
RECON = dict(k=20, temperature=50.0, normalize="sum", neighbours="global")


# --------------------------------------------------------------------------- naive versions
def naive_avg_pool(z, hw, grid):
    """z (N, C) -> (h*w, C): mean over rows floor(r*H/h) .. ceil((r+1)*H/h) (torch's regions)."""
    (H, W), (h, w) = hw, grid
    out = []
    for r in range(h):
        for c in range(w):
            cells = [z[i * W + j] for i in range(r * H // h, -(-(r + 1) * H // h))
                     for j in range(c * W // w, -(-(c + 1) * W // w))]
            out.append(sum(cells) / len(cells))
    return torch.stack(out)


def naive_bilinear(s, grid, hw):
    """s (h*w, C) -> (H*W, C), half-pixel centres, edge-clamped (align_corners=False)."""
    (h, w), (H, W) = grid, hw

    def taps(i, n_in, n_out):
        x = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(math.floor(x)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        return lo, hi, x - lo

    out = []
    for i in range(H):
        r0, r1, fr = taps(i, h, H)
        for j in range(W):
            c0, c1, fc = taps(j, w, W)
            out.append((1 - fr) * ((1 - fc) * s[r0 * w + c0] + fc * s[r0 * w + c1])
                       + fr * ((1 - fc) * s[r1 * w + c0] + fc * s[r1 * w + c1]))
    return torch.stack(out)


def naive_keep(z, score, budget, fuse):
    """EViT on one image: indices of the top tokens (ascending), fused token or None."""
    n_keep = budget - 1 if fuse else budget
    ranked = sorted(range(len(score)), key=lambda p: -float(score[p]))
    kept = sorted(ranked[:n_keep])
    fused = None
    if fuse:
        rest = ranked[n_keep:]
        total = sum(float(score[p]) for p in rest)
        fused = sum(float(score[p]) / total * z[p].double() for p in rest)
    return kept, fused


def naive_tome(z, metric, budget):
    """ToMe on one image, with lists: merged tokens (M, C) and the members of each."""
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    tokens = [(z[i].double(), metric[i].double(), 1.0, [i]) for i in range(len(z))]
    while len(tokens) > budget:
        a_side, b_side = tokens[0::2], tokens[1::2]
        r = min(len(tokens) - budget, len(a_side))
        edges = []
        for ai, a in enumerate(a_side):
            sims = [cos(a[1], b[1]) for b in b_side]
            bi = max(range(len(b_side)), key=lambda j: sims[j])
            edges.append((sims[bi], ai, bi))
        merged = {ai: bi for _, ai, bi in sorted(edges, key=lambda e: -e[0])[:r]}
        b_new = [[b[0] * b[2], b[1] * b[2], b[2], list(b[3])] for b in b_side]
        for ai, bi in merged.items():
            a = a_side[ai]
            b_new[bi][0] = b_new[bi][0] + a[0] * a[2]
            b_new[bi][1] = b_new[bi][1] + a[1] * a[2]
            b_new[bi][2] += a[2]
            b_new[bi][3] += a[3]
        tokens = ([a for ai, a in enumerate(a_side) if ai not in merged]
                  + [(x / s, m / s, s, members) for x, m, s, members in b_new])
    return torch.stack([t[0] for t in tokens]), [t[3] for t in tokens]


def naive_guide(layer, x):
    """Class-token attention (averaged over heads, class column dropped) and head-mean keys,
    one head at a time from the layer's packed projection."""
    mha = layer.attn.attn
    C, heads = x.shape[-1], mha.num_heads
    d = C // heads
    y = layer.norm1(x).double()
    W, b = mha.in_proj_weight.double(), mha.in_proj_bias.double()
    attn, keys = 0, 0
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        q = y[:, 0] @ W[rows].T + b[rows]                                 # (B, d)
        k = y @ W[C:2 * C][rows].T + b[C:2 * C][rows]                     # (B, L, d)
        attn = attn + torch.softmax((k @ q[..., None])[..., 0] / math.sqrt(d), -1) / heads
        keys = keys + k / heads
    return attn[:, 1:], keys[:, 1:]


# --------------------------------------------------------------------------- operators
@pytest.mark.parametrize("hw,grid", [((40, 40), (28, 28)), ((7, 9), (3, 4)), ((30, 40), (15, 20))])
def test_avgpool_and_bilinear_match_naive(hw, grid):
    z = torch.randn(2, hw[0] * hw[1], 6)
    pooled, state = AdaptiveAvgPoolReduction(grid)(z, hw)
    refined = torch.tanh(pooled) * 2
    full = BilinearReconstruction()(refined, state)
    assert pooled.shape == (2, grid[0] * grid[1], 6) and full.shape == z.shape
    for b in range(2):
        torch.testing.assert_close(pooled[b].double(), naive_avg_pool(z[b].double(), hw, grid),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full[b].double(), naive_bilinear(refined[b].double(), grid, hw),
                                   atol=1e-5, rtol=1e-5)
    # the method's reconstruction runs on the pooled centres (the paper's Table 3 pairing)
    assert TokenReconstruction()(refined, state).shape == z.shape


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("score", ["cls_attention", "norm"])
def test_evit_matches_naive(score, fuse):
    hw, grid = (7, 9), (3, 4)
    z = torch.randn(2, 63, 5)
    attention = torch.rand(2, 63).softmax(-1)
    keeping = AttentiveTokenKeeping(grid, score=score, fuse=fuse)
    kwargs = dict(cls_attention=attention) if score == "cls_attention" else {}
    kept, state = keeping(z, hw, **kwargs)
    assert kept.shape == (2, 12, 5)
    refined = kept * 3 - 1
    full = ScatterReconstruction()(refined, state)
    for b in range(2):
        s = attention[b] if score == "cls_attention" else z[b].norm(dim=-1)
        index, fused = naive_keep(z[b], s, 12, fuse)
        assert state.index[b].tolist() == index
        torch.testing.assert_close(kept[b, :len(index)], z[b, index])
        if fuse:
            torch.testing.assert_close(kept[b, -1].double(), fused)
        expected = z[b].clone()
        expected[index] = refined[b, :len(index)]
        torch.testing.assert_close(full[b], expected)


@pytest.mark.parametrize("hw,grid", [((8, 8), (5, 5)), ((7, 9), (3, 4)), ((6, 5), (1, 1)),
                                     ((10, 10), (7, 7))])
def test_tome_matches_naive(hw, grid):
    N, M = hw[0] * hw[1], grid[0] * grid[1]
    z = torch.randn(2, N, 6)
    keys = torch.randn(2, N, 4)
    merged, state = BipartiteMerging(grid, metric="keys")(z, hw, keys=keys)
    assert merged.shape == (2, M, 6) and state.source.shape == (2, N)
    refined = merged * 2 + 1
    full = UnmergeReconstruction()(refined, state)
    for b in range(2):
        ref, members = naive_tome(z[b], keys[b], M)
        torch.testing.assert_close(merged[b].double(), ref)
        assert state.size[b].tolist() == [float(len(m)) for m in members]
        for i, group in enumerate(members):
            for p in group:
                assert state.source[b, p] == i
                torch.testing.assert_close(full[b, p], refined[b, i])
    # metric='tokens' matches on the tokens themselves
    merged_t, _ = BipartiteMerging(grid, metric="tokens")(z, hw)
    torch.testing.assert_close(merged_t[0].double(), naive_tome(z[0], z[0], M)[0])


def test_attention_guide_matches_torch_and_per_head_loop():
    """cls_attention equals torch's own head-averaged attention weights; keys the loop."""
    vit = VisionTransformer(img_size=(64, 64), patch_size=16, embed_dims=16, num_layers=2,
                            num_heads=4)
    vit.eval()
    layer = vit.layers[1]
    x = torch.randn(2, 1 + 12, 16)
    mha = layer.attn.attn
    y = layer.norm1(x)
    with torch.no_grad():
        guide = attention_guide(y, mha.in_proj_weight, mha.in_proj_bias, mha.num_heads,
                                ("cls_attention", "keys"), has_cls_token=True)
        seq = y if mha.batch_first else y.transpose(0, 1)
        _, weights = mha(seq, seq, seq, need_weights=True, average_attn_weights=True)
        attn_ref, keys_ref = naive_guide(layer, x)
    torch.testing.assert_close(guide["cls_attention"], weights[:, 0, 1:])
    torch.testing.assert_close(guide["cls_attention"].double(), attn_ref)
    torch.testing.assert_close(guide["keys"].double(), keys_ref)
    assert attention_guide(y, mha.in_proj_weight, None, 4, (), True) == {}


@pytest.mark.parametrize("reducer", ["AvgPool", "EViT", "ToMe"])
def test_full_budget_is_identity(reducer):
    """A budget equal to the token grid changes nothing (bit-identical round trip)."""
    z = torch.randn(2, 35, 8)
    spec = {"AvgPool": dict(type="AvgPool"), "EViT": dict(type="EViT", score="norm"),
            "ToMe": dict(type="ToMe", metric="tokens")}[reducer]
    recon = {"AvgPool": dict(type="Bilinear")}.get(reducer)
    _, reduce, _, restore = build_reduction(spec, recon, (5, 7), CLUSTER, RECON)
    reduced, state = reduce(z, (5, 7))
    assert torch.equal(reduced, z)
    assert torch.equal(restore(reduced, state), z)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_round_trip_keeps_dtype(dtype):
    z = torch.randn(1, 48, 8).to(dtype)
    for spec, recon in [(dict(type="AvgPool"), dict(type="Bilinear")),
                        (dict(type="EViT", score="norm", fuse=True), None),
                        (dict(type="ToMe", metric="tokens"), None)]:
        _, reduce, _, restore = build_reduction(spec, recon, (3, 4), CLUSTER, RECON)
        reduced, state = reduce(z, (6, 8))
        out = restore(reduced, state)
        assert reduced.dtype == dtype and out.dtype == dtype
        assert torch.isfinite(out.float()).all()


def test_registry_pairs_and_defaults():
    for spec, recon, names in [
        (None, None, ("Cluster", "Cluster")),
        (dict(type="AvgPool"), None, ("AvgPool", "Cluster")),       # paper Table 3 pairing
        (dict(type="AvgPool"), dict(type="Bilinear"), ("AvgPool", "Bilinear")),
        (None, dict(type="Bilinear"), ("Cluster", "Bilinear")),     # paper Table 4 pairing
        (dict(type="EViT"), None, ("EViT", "Scatter")),
        (dict(type="ToMe"), None, ("ToMe", "Unmerge")),
    ]:
        reducer_type, reduce, recon_type, restore = build_reduction(spec, recon, 0.5, CLUSTER,
                                                                    RECON)
        assert (reducer_type, recon_type) == names
        assert list(reduce.parameters()) == [] and list(restore.parameters()) == []
    _, reduce, _, restore = build_reduction(None, None, (4, 4), dict(window=3, iters=2,
                                            temperature=9.0), dict(RECON, k=5))
    assert (reduce.window, reduce.iters, reduce.temperature, restore.k) == (3, 2, 9.0, 5)


@pytest.mark.parametrize("reducer,reconstructor,match", [
    (dict(type="Kmeans"), None, "reducer type must be one of"),
    ("AvgPool", None, "reducer must be None or a dict"),
    (dict(score="norm"), None, "reducer must be None or a dict"),
    (None, dict(type="Nearest"), "reconstructor type must be one of"),
    (dict(type="EViT", score="max"), None, "reducer.score must be one of"),
    (dict(type="EViT", fuse=1), None, "reducer.fuse must be True or False"),
    (dict(type="EViT", keep=0.5), None, r"unknown option\(s\) \['keep'\]"),
    (dict(type="ToMe", metric="values"), None, "reducer.metric must be one of"),
    (dict(type="Cluster", window=7), None, "configured by cluster_grid"),
    (dict(type="ToMe"), dict(type="Cluster"), "cannot undo reducer 'ToMe'"),
    (dict(type="ToMe"), dict(type="Scatter"), r"use one of \('Unmerge',\)"),
    (dict(type="EViT"), dict(type="Bilinear"), "cannot undo reducer 'EViT'"),
    (dict(type="AvgPool"), dict(type="Unmerge"), r"use one of \('Cluster', 'Bilinear'\)"),
])
def test_registry_validation(reducer, reconstructor, match):
    with pytest.raises(ValueError, match=match):
        build_reduction(reducer, reconstructor, 0.5, CLUSTER, RECON)


def test_grid_only_backbones_reject_evit_and_tome():
    assert set(GRID_REDUCERS) == {"Cluster", "AvgPool"}
    for kind in ("EViT", "ToMe"):
        with pytest.raises(ValueError, match="plain ViT backbones only"):
            build_reduction(dict(type=kind), None, 0.5, CLUSTER, RECON, allowed=GRID_REDUCERS)
    build_reduction(dict(type="AvgPool"), dict(type="Bilinear"), 0.5, CLUSTER, RECON,
                    allowed=GRID_REDUCERS)


def test_operators_reject_bad_calls():
    with pytest.raises(ValueError, match="cls_attention"):
        AttentiveTokenKeeping((2, 2))(torch.randn(1, 16, 3), (4, 4))
    with pytest.raises(ValueError, match="keys"):
        BipartiteMerging((2, 2))(torch.randn(1, 16, 3), (4, 4))
    with pytest.raises(ValueError, match="hw"):
        AdaptiveAvgPoolReduction((2, 2))(torch.randn(1, 15, 3), (4, 4))
    with pytest.raises(ValueError, match="larger than the token grid"):
        BipartiteMerging((5, 2), metric="tokens")(torch.randn(1, 16, 3), (4, 4))
    _, state = AttentiveTokenKeeping((2, 2), score="norm")(torch.randn(1, 16, 3), (4, 4))
    with pytest.raises(ValueError, match="do not match"):
        ScatterReconstruction()(torch.randn(1, 5, 3), state)


# --------------------------------------------------------------------------- fvcore
class _RoundTrip(torch.nn.Module):
    def __init__(self, reduce, restore, hw, **guide):
        super().__init__()
        self.reduce, self.restore, self.hw, self.guide = reduce, restore, hw, guide

    def forward(self, z):
        reduced, state = self.reduce(z, self.hw, **self.guide)
        return self.restore(reduced, state)


def test_fvcore_counts_every_reducer():
    """fvcore counts (1 multiply-add = 1 flop): pooling reads every token once, bilinear
    takes 4 per output element, ToMe's similarity matmuls + merge additions, EViT's
    fused-token weighted sum; gathers/scatters (data movement) count 0."""
    B, (H, W), C = 1, (8, 8), 4
    N = H * W
    z = torch.randn(B, N, C)
    pool_bilinear = count_flops(_RoundTrip(AdaptiveAvgPoolReduction((4, 4)),
                                           BilinearReconstruction(), (H, W)), (z,))
    assert pool_bilinear.total == B * N * C + 4 * B * N * C
    # ToMe 64 -> 25: round 1 merges all 32 A tokens (32 x 32 similarities), round 2 merges
    # 7 of 16 (16 x 16). A merge adds C token channels and their size (mass); round 1
    # also merges the C metric channels (+ mass) and the sizes for the next round; the
    # last round merges no metric, and its sizes are not part of the traced output.
    tome = count_flops(_RoundTrip(BipartiteMerging((5, 5), metric="tokens"),
                                  UnmergeReconstruction(), (H, W)), (z,))
    similarity = (32 * 32 + 16 * 16) * C
    merges = 32 * ((C + 1) * 2 + 1) + 7 * (C + 1)
    assert tome.total == B * (similarity + merges), tome.total
    evit = count_flops(_RoundTrip(AttentiveTokenKeeping((4, 4), score="norm", fuse=True),
                                  ScatterReconstruction(), (H, W)), (z,))
    assert evit.total == B * (N - 15) * C                      # the fused token's weighted sum
    for report in (pool_bilinear, tome, evit):
        assert not set(report.unsupported) & {"aten::bmm", "aten::scatter_add",
                                              "aten::adaptive_avg_pool2d",
                                              "aten::upsample_bilinear2d"}


# --------------------------------------------------------------------------- in ExpeditedViT
SMALL = dict(img_size=(224, 224), patch_size=16, embed_dims=32, num_layers=6, num_heads=2,
             mlp_ratio=2, final_norm=True, norm_cfg=dict(type="LN", eps=1e-6))
STOCK_KEYS = {"out_indices", "with_cls_token", "final_norm"}
PAIRS = {
    "AvgPool+Cluster": (dict(type="AvgPool"), None),
    "AvgPool+Bilinear": (dict(type="AvgPool"), dict(type="Bilinear")),
    "Cluster+Bilinear": (None, dict(type="Bilinear")),
    "EViT": (dict(type="EViT"), None),
    "EViT-fuse": (dict(type="EViT", fuse=True), None),
    "ToMe": (dict(type="ToMe"), None),
}


def build_pair(**expedite):
    stock = VisionTransformer(**SMALL, **{k: v for k, v in expedite.items() if k in STOCK_KEYS})
    ours = MODELS.build(dict(type="ExpeditedViT", **SMALL, **expedite))
    ours.load_state_dict(stock.state_dict())
    stock.eval()                           # (mmseg's ViT.train returns None: no chaining)
    ours.eval()
    return stock, ours


def reference(stock, x, alpha, end, grid, pair):
    """docs/method.md §4 with the reducer written out naively, image by image: class token set
    aside, guidance from layer alpha+1's own norm and projections, reconstruction after
    layer ``end`` (after the final norm when end = depth; tokens EViT did not keep take
    their layer-alpha value, through that norm too)."""
    tokens, (H, W) = stock.patch_embed(x)
    B = x.shape[0]
    x = stock._pos_embeding(torch.cat([stock.cls_token.expand(B, -1, -1), tokens], 1),
                            (H, W), stock.pos_embed)
    M = grid[0] * grid[1]
    kind = pair.split("+")[0].split("-")[0]
    depth, outs, restore = len(stock.layers), [], None
    for number in range(1, depth + 1):
        x = stock.layers[number - 1](x)
        if number == depth:
            x = stock.norm1(x)
        if number == end:
            x = torch.cat([x[:, :1], restore(x[:, 1:], number == depth)], 1)
        if number - 1 in stock.out_indices:
            outs.append(x[:, 1:].transpose(1, 2).reshape(B, -1, H, W))
        if number == alpha:
            z = x[:, 1:].double()
            attention, keys = naive_guide(stock.layers[alpha], x)
            if kind in ("AvgPool", "Cluster"):
                if kind == "AvgPool":
                    centers = torch.stack([naive_avg_pool(z[b], (H, W), grid) for b in range(B)])
                else:
                    centers = TokenClustering(grid)(x[:, 1:], (H, W))[0].double()

                def restore(s, final, z=z, centers=centers):
                    if pair.endswith("Bilinear"):
                        return torch.stack([naive_bilinear(s[b].double(), grid, (H, W))
                                            for b in range(B)]).float()
                    import naive
                    return torch.stack([naive.reconstruct(z[b], centers[b], s[b])
                                        for b in range(B)]).float()
                reduced = centers.float()
            elif kind == "EViT":
                picks = [naive_keep(z[b], attention[b], M, pair.endswith("fuse"))
                         for b in range(B)]
                reduced = torch.stack([torch.cat([z[b, p[0]]] + ([p[1][None]] if p[1] is not None
                                                                 else [])) for b, p in enumerate(picks)])
                reduced = reduced.float()

                def restore(s, final, picks=picks, before=x[:, 1:]):
                    fill = stock.norm1(before) if final else before
                    out = fill.clone()
                    for b, (index, _) in enumerate(picks):
                        out[b, index] = s[b, :len(index)]
                    return out
            else:
                merged = [naive_tome(z[b], keys[b], M) for b in range(B)]
                reduced = torch.stack([m[0] for m in merged]).float()

                def restore(s, final, merged=merged):
                    out = torch.empty(B, H * W, s.shape[-1])
                    for b, (_, members) in enumerate(merged):
                        for i, group in enumerate(members):
                            out[b, group] = s[b, i]
                    return out
            x = torch.cat([x[:, :1], reduced], 1)
    return outs


@pytest.mark.parametrize("pair", list(PAIRS))
def test_expedited_vit_with_each_reducer_matches_reference(pair):
    reducer, reconstructor = PAIRS[pair]
    grid = (7, 9)
    for alpha, end, out_indices in [(2, 6, (1, 5)), (1, 4, (3, 5))]:
        stock, ours = build_pair(out_indices=out_indices, cluster_after=alpha,
                                 reconstruct_after=end, cluster_grid=grid, reducer=reducer,
                                 reconstructor=reconstructor)
        x = torch.randn(2, 3, 160, 208)                           # 10 x 13 tokens, batched
        with torch.no_grad():
            outs = ours(x)
            ref = reference(stock, x, alpha, end, grid, pair)
            plain = stock(x)
        assert len(outs) == len(ref) == len(out_indices)
        for a, b in zip(outs, ref):
            assert a.shape == (2, 32, 10, 13)
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(outs[-1], plain[-1], atol=1e-3)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_disabled_with_a_reducer_set_is_bit_identical(pair):
    reducer, reconstructor = PAIRS[pair]
    stock, ours = build_pair(out_indices=(2, 5), reducer=reducer, reconstructor=reconstructor)
    assert list(ours.state_dict()) == list(stock.state_dict())
    x = torch.randn(1, 3, 160, 144)
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("pair", ["AvgPool+Bilinear", "EViT", "ToMe"])
def test_odd_shapes_ratio_budget_and_fallback(pair):
    reducer, reconstructor = PAIRS[pair]
    stock, ours = build_pair(out_indices=(5,), cluster_after=2, cluster_grid=0.6,
                             reducer=reducer, reconstructor=reconstructor)
    assert list(ours.state_dict()) == list(stock.state_dict())
    for shape in [(1, 3, 208, 144), (3, 3, 80, 272)]:            # 13x9, 5x17 tokens
        with torch.no_grad():
            (out,) = ours(torch.randn(*shape))
        assert out.shape == (shape[0], 32, shape[2] // 16, shape[3] // 16)
    stock, small = build_pair(out_indices=(5,), cluster_after=2, cluster_grid=(12, 12),
                              reducer=reducer, reconstructor=reconstructor)
    x = torch.randn(1, 3, 160, 224)                               # 10 x 14 tokens < 12 x 12
    assert_stock_fallback_once(stock, small, x)


def test_without_class_token():
    """EViT's attention score needs the class token (rejected at build); the norm proxy and
    ToMe work without it."""
    with pytest.raises(ValueError, match="with_cls_token=False"):
        build_pair(with_cls_token=False, cluster_after=2, reducer=dict(type="EViT"))
    for reducer in (dict(type="EViT", score="norm"), dict(type="ToMe")):
        _, ours = build_pair(with_cls_token=False, out_indices=(5,), cluster_after=2,
                             cluster_grid=(5, 6), reducer=reducer)
        with torch.no_grad():
            (out,) = ours(torch.randn(2, 3, 160, 192))
        assert out.shape == (2, 32, 10, 12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(reducer=dict(type="Kmeans")), "reducer type"),
    (dict(reducer=dict(type="ToMe"), reconstructor=dict(type="Bilinear")), "cannot undo"),
    (dict(reducer=dict(type="EViT", score="random")), "reducer.score"),
    (dict(reducer=dict(type="AvgPool"), cluster_grid=0), "cluster_grid"),
])
def test_vit_rejects_bad_reducer_config_at_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type="ExpeditedViT", **SMALL, cluster_after=2, **kwargs))


def test_fvcore_counts_reducers_inside_the_backbone():
    """At the same budget the backbone costs the same up to the reducer's own work: EViT adds
    exactly the class-token attention it computes (layer norm, keys of all tokens, one
    query, one attention row), ToMe the keys (+ the matching), AvgPool+Bilinear almost
    nothing; all far below the stock backbone."""
    x = torch.randn(1, 3, 224, 224)                               # 14 x 14 tokens
    counts = {}
    for pair in ("AvgPool+Bilinear", "EViT", "ToMe"):
        reducer, reconstructor = PAIRS[pair]
        _, ours = build_pair(out_indices=(5,), cluster_after=2, cluster_grid=(7, 7),
                             reducer=reducer, reconstructor=reconstructor)
        counts[pair] = count_flops(ours, (x,)).total
    stock, _ = build_pair(out_indices=(5,))
    counts["stock"] = count_flops(stock, (x,)).total
    L, C, N = 197, 32, 196
    # fvcore: layer norm 5 per element, linear = MACs (bias not counted)
    norm, k_proj, q_proj, row = 5 * L * C, L * C * C, C * C, L * C
    fill_norm = 5 * N * C          # the final norm of the tokens EViT did not keep
    pooling = N * C + 4 * N * C
    extra = counts["EViT"] - (counts["AvgPool+Bilinear"] - pooling)
    assert extra == norm + k_proj + q_proj + row + fill_norm, (extra, counts)
    assert counts["ToMe"] > counts["AvgPool+Bilinear"] - pooling + norm + k_proj
    assert max(counts[p] for p in PAIRS if p in counts) < 0.6 * counts["stock"]


# --------------------------------------------------------------------------- in ExpeditedSwin
class _PerWindow:
    """A naive per-window operator for test_swin's per-window reference."""

    def __init__(self, grid, fn):
        self.grid, self.fn = grid, fn

    def __call__(self, *args):
        return self.fn(*args)


def test_expedited_swin_runs_the_grid_baselines_per_window():
    """reducer=AvgPool, reconstructor=Bilinear in ExpeditedSwin: every K x K window pooled to
    k x k and upsampled back on its own (the Swin tests' per-window reference, with the naive
    pooling / bilinear written above); EViT and ToMe are rejected at build."""
    import swin_reference as test_swin
    package, k, K = "mmseg", 4, test_swin.TINY["window_size"]
    stock, ours = test_swin.build_pair(package, torch.float64, stage=2, cluster_after=2,
                                       clustered_window_size=k, reducer=dict(type="AvgPool"),
                                       reconstructor=dict(type="Bilinear"))
    assert list(ours.state_dict()) == list(stock.state_dict())
    pool = _PerWindow((k, k), lambda window, hw: (
        naive_avg_pool(window[0], hw, (k, k))[None], None))
    bilinear = _PerWindow((k, k), lambda own, state: naive_bilinear(own[0], (k, k), (K, K))[None])
    x = torch.randn(1, 3, 200, 264, dtype=torch.float64)      # stage-3 map 13x17, padded
    with torch.no_grad():
        ref = test_swin.reference(package, stock, x, 2, 2, test_swin.TINY["depths"][2], k,
                                  pool, bilinear)
        outs = ours(x)
        plain = stock(x)
    for a, b in zip(outs, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(outs[2], plain[2], atol=1e-3)
    for reducer in ("EViT", "ToMe"):
        with pytest.raises(ValueError, match="plain ViT backbones only"):
            test_swin.build_pair(package, cluster_after=2, reducer=dict(type=reducer))
    stock, ours = test_swin.build_pair(package, reducer=dict(type="AvgPool"))  # disabled
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)
