"""The simple alternatives the paper compares against (docs/method.md §6), pure torch.

Every reducer / reconstructor has the interface of the method's own pair
(:class:`~expedite_mm.ops.cluster.TokenClustering` / ``TokenReconstruction``)::

    reduced, state = reducer(tokens (B, N, C), hw=(H, W), **guide)   # (B, M, C)
    tokens = reconstructor(reduced (B, M, C), state)                  # (B, N, C)

and the same token budget ``grid`` (``M = h * w`` tokens, an int, ``(h, w)`` or a ratio of
the token grid), so that all comparisons are made at equal budget:

========== ============================================ ===========================
reducer    what it keeps                                reconstructors
========== ============================================ ===========================
Cluster    the method: local soft k-means centres       Cluster (default), Bilinear
AvgPool    adaptive average pool to h x w (paper Tab.3) Cluster (default), Bilinear
EViT       the M tokens the class token attends most   Scatter
ToMe       bipartite soft matching, merged to M tokens  Unmerge
========== ============================================ ===========================

``Cluster``/``AvgPool`` produce an ``h x w`` grid of tokens with a
:class:`~expedite_mm.ops.cluster.ClusterState`, so either grid reconstructor applies (and
both work per Swin window). ``EViT`` and ``ToMe`` keep no grid: their states only make
sense to their own reconstructor, and they apply to plain ViTs only.

EViT and ToMe as Expedit-SWAG ran them for classification -- steps inside several
layers, not one reduction to a budget -- live in :mod:`expedite_mm.ops.layerwise`; the
steps they share with the reducers here are :func:`keep_top_tokens` and
:func:`merge_tokens`.

Some reducers need more than the tokens (``needs``): ``cls_attention`` (B, N), the class
token's attention to every token, and ``keys`` (B, N, d), attention keys averaged over
heads. :func:`attention_guide` computes both from an attention layer's own projections;
the backbones pass them as keyword arguments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat import CPU_HALF_BMM
from .cluster import (DEFAULT_WINDOW, ClusterState, GridSpec, TokenClustering,
                      TokenReconstruction, compute_dtype, resolve_grid, validate_choice,
                      validate_grid, validate_window)


def _check_input(tokens: Tensor, hw: Tuple[int, int], grid: GridSpec
                 ) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Validated ``(hw, grid)`` for one call (the rules of TokenClustering)."""
    N = tokens.shape[1]
    hw = (int(hw[0]), int(hw[1]))
    if hw[0] * hw[1] != N:
        raise ValueError(f"hw={hw} does not match the {N} tokens given")
    grid = resolve_grid(grid, hw)
    if grid[0] > hw[0] or grid[1] > hw[1]:
        raise ValueError(f"token budget grid {grid} is larger than the token grid {hw}")
    return hw, grid


# --------------------------------------------------------------------------- guidance
def attention_guide(normed: Tensor, in_proj_weight: Tensor, in_proj_bias: Optional[Tensor],
                    num_heads: int, needs: Sequence[str], has_cls_token: bool
                    ) -> Dict[str, Tensor]:
    """What ``needs`` asks for, from one attention layer's q/k projections.

    normed: (B, [1 +] N, C) tokens after the layer's pre-attention norm (class token
    first if ``has_cls_token``); in_proj_weight: the layer's packed (3C, C) q/k/v
    projection (``nn.MultiheadAttention`` layout), in_proj_bias (3C,) or None.
    Returns ``cls_attention`` (B, N): the class-token row of the layer's attention
    (softmax over all keys, class token included, averaged over heads), without the
    class token's own column; ``keys`` (B, N, C / heads): patch-token keys averaged over
    heads. Only the projections that are needed are computed (keys of all tokens: one
    N x C x C product; the class query: C x C).
    """
    out: Dict[str, Tensor] = {}
    if not needs:
        return out
    B, L, C = normed.shape
    d = C // num_heads
    w_q, w_k = in_proj_weight[:C], in_proj_weight[C:2 * C]
    b_q, b_k = (None, None) if in_proj_bias is None else (in_proj_bias[:C], in_proj_bias[C:2 * C])
    keys = F.linear(normed, w_k, b_k).view(B, L, num_heads, d)            # (B, L, heads, d)
    start = 1 if has_cls_token else 0
    if "cls_attention" in needs:
        if not has_cls_token:
            raise ValueError("cls_attention needs a class token")
        query = F.linear(normed[:, :1], w_q, b_q).view(B, num_heads, 1, d)
        logits = torch.matmul(query, keys.permute(0, 2, 3, 1)) / math.sqrt(d)  # (B, h, 1, L)
        out["cls_attention"] = logits.softmax(-1).mean(1)[:, 0, start:]
    if "keys" in needs:
        out["keys"] = keys[:, start:].mean(2)
    return out


# --------------------------------------------------------------------------- AvgPool / Bilinear
class AdaptiveAvgPoolReduction(nn.Module):
    """Adaptive average pooling to the ``h x w`` grid: the EM's initial centres, unrefined.

    The paper's Table 3 baseline (same positions as the clusters). The state is a
    :class:`ClusterState`, so the method's reconstruction (default) or bilinear upsampling
    can follow; ``window`` only matters for ``neighbours='local'`` reconstruction.

    ``forward(tokens (B, N, C), hw) -> (pooled (B, h*w, C), ClusterState)``.
    """

    needs: Tuple[str, ...] = ()

    def __init__(self, grid: GridSpec, window: int = DEFAULT_WINDOW) -> None:
        super().__init__()
        self.grid = validate_grid(grid, "grid")
        self.window = validate_window(window, "window")

    def extra_repr(self) -> str:
        return f"grid={self.grid}"

    def forward(self, tokens: Tensor, hw: Tuple[int, int],
                grid: Optional[GridSpec] = None) -> Tuple[Tensor, ClusterState]:
        """As :meth:`TokenClustering.forward` (``grid``: this call's budget)."""
        hw, grid = _check_input(tokens, hw, self.grid if grid is None else grid)
        B, N, C = tokens.shape
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            z = tokens.to(compute_dtype(tokens.dtype))
            pooled = F.adaptive_avg_pool2d(z.transpose(1, 2).reshape(B, C, *hw), grid)
            pooled = pooled.flatten(2).transpose(1, 2)
        return pooled.to(tokens.dtype), ClusterState(z, pooled, hw, grid, self.window)


class BilinearReconstruction(nn.Module):
    """Bilinear upsampling of the ``h x w`` token grid to ``H x W`` (paper Table 4).

    ``F.interpolate(mode='bilinear', align_corners=False)``: token centres on both grids
    are cell centres, as with the adaptive pooling that made them.

    ``forward(reduced (B, h*w, C), ClusterState) -> (B, H*W, C)``.
    """

    def forward(self, reduced: Tensor, state: ClusterState) -> Tensor:
        B, M, C = reduced.shape
        (h, w), hw = state.grid, state.hw
        if M != h * w:
            raise ValueError(f"{M} tokens do not form the {h}x{w} grid of the state")
        with torch.autocast(device_type=reduced.device.type, enabled=False):
            grid = reduced.to(compute_dtype(reduced.dtype)).transpose(1, 2).reshape(B, C, h, w)
            full = F.interpolate(grid, size=hw, mode="bilinear", align_corners=False)
        return full.flatten(2).transpose(1, 2).to(reduced.dtype)


# --------------------------------------------------------------------------- EViT
EVIT_SCORES = ("cls_attention", "norm")


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    """``torch.bmm``; float16 on a CPU without float16 products (torch 2.1) in float32."""
    if a.dtype == torch.float16 and a.device.type == "cpu" and not CPU_HALF_BMM:
        return torch.bmm(a.float(), b.float()).to(a.dtype)
    return torch.bmm(a, b)


def keep_top_tokens(tokens: Tensor, score: Tensor, n_keep: int, fuse: bool = False,
                    normalize_fused: bool = True) -> Tuple[Tensor, Tensor]:
    """EViT's selection: the ``n_keep`` tokens of highest ``score``, in their original order.

    tokens (B, N, C), score (B, N). With ``fuse`` one more token follows them: the
    score-weighted sum of the others (EViT's fused token), its weights normalised to sum 1
    (``normalize_fused``) or the raw scores, as EViT and Expedit-SWAG write it.
    Returns ``(kept (B, n_keep [+ 1], C), index (B, n_keep))``, index ascending.
    """
    C = tokens.shape[2]
    order = score.argsort(dim=1, descending=True, stable=True)
    index = order[:, :n_keep].sort(dim=1).values
    kept = tokens.gather(1, index[..., None].expand(-1, -1, C))
    if fuse:
        dropped = order[:, n_keep:]
        weight = score.gather(1, dropped)
        if normalize_fused:
            weight = weight / weight.sum(1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
        others = tokens.gather(1, dropped[..., None].expand(-1, -1, C))
        fused = _bmm(weight[:, None, :].to(tokens.dtype), others)     # (B, 1, C)
        kept = torch.cat([kept, fused], dim=1)
    return kept, index


@dataclass
class KeepState:
    """index: (B, K) kept token positions, ascending; fill: (B, N, C) what the tokens that
    were not kept get back (their value before reduction); fused: whether the reduced
    set ends with one fused token; hw: the token grid."""

    index: Tensor
    fill: Tensor
    fused: bool
    hw: Tuple[int, int]

    def map_fill(self, fn) -> "KeepState":
        """The same state with ``fn`` applied to ``fill`` (e.g. a final norm)."""
        return replace(self, fill=fn(self.fill))


class AttentiveTokenKeeping(nn.Module):
    """EViT-style keeping (Liang et al., ICLR 2022), training-free, at a fixed budget.

    Keeps the ``h*w`` tokens with the highest score, in their original order. ``score``:
    ``'cls_attention'`` (EViT: the attention of the class token, averaged over heads;
    passed as ``cls_attention=`` (B, N)) or ``'norm'`` (the tokens' L2 norm: a proxy for
    backbones without a class token). ``fuse=True`` keeps ``h*w - 1`` tokens plus EViT's
    fused token (score-weighted mean of the others), so the budget stays ``h*w``.

    ``forward(tokens (B, N, C), hw, cls_attention=None) -> (kept (B, h*w, C), KeepState)``.
    """

    def __init__(self, grid: GridSpec, score: str = "cls_attention", fuse: bool = False) -> None:
        super().__init__()
        self.grid = validate_grid(grid, "grid")
        self.score = validate_choice(score, "score", EVIT_SCORES)
        if not isinstance(fuse, bool):
            raise ValueError(f"fuse must be True or False, got {fuse!r}")
        self.fuse = fuse

    @property
    def needs(self) -> Tuple[str, ...]:
        return ("cls_attention",) if self.score == "cls_attention" else ()

    def extra_repr(self) -> str:
        return f"grid={self.grid}, score={self.score!r}, fuse={self.fuse}"

    def forward(self, tokens: Tensor, hw: Tuple[int, int],
                cls_attention: Optional[Tensor] = None) -> Tuple[Tensor, KeepState]:
        hw, grid = _check_input(tokens, hw, self.grid)
        B, N, C = tokens.shape
        if self.score == "cls_attention":
            if cls_attention is None or cls_attention.shape != (B, N):
                raise ValueError(f"score='cls_attention' needs cls_attention of shape {(B, N)}, "
                                 f"got {None if cls_attention is None else tuple(cls_attention.shape)}")
            score = cls_attention.float()
        else:
            score = tokens.float().norm(dim=-1)
        budget = grid[0] * grid[1]
        n_keep = budget - 1 if self.fuse else budget
        kept, index = keep_top_tokens(tokens, score, n_keep, fuse=self.fuse, normalize_fused=True)
        return kept, KeepState(index, tokens, self.fuse, hw)


class ScatterReconstruction(nn.Module):
    """Kept tokens go back to their positions; the others take ``state.fill`` (their
    value before reduction: they skip the reduced layers). A fused token is dropped.

    ``forward(kept (B, K[+1], C), KeepState) -> (B, N, C)``.
    """

    def forward(self, reduced: Tensor, state: KeepState) -> Tensor:
        B, K = state.index.shape
        if reduced.shape[:2] != (B, K + int(state.fused)):
            raise ValueError(f"reduced tokens of shape {tuple(reduced.shape)} do not match "
                             f"the keeping state ({K} kept{' + 1 fused' if state.fused else ''})")
        C = reduced.shape[2]
        out = state.fill.to(reduced.dtype)
        return out.scatter(1, state.index[..., None].expand(-1, -1, C), reduced[:, :K])


# --------------------------------------------------------------------------- ToMe
TOME_METRICS = ("keys", "tokens")


@dataclass
class Matching:
    """One round of ToMe's bipartite soft matching over ``n`` tokens.

    The tokens alternate between set A (even positions) and set B (odd). merged: (B, r)
    the A rows merged; kept: (B, nA - r) the A rows kept, ascending; dst: (B, r) the B
    row each merged A row joins. The merged sequence is ``[kept A rows, B rows]``.
    """

    merged: Tensor
    kept: Tensor
    dst: Tensor

    def merge(self, values: Tensor, size: Tensor) -> Tensor:
        """Size-weighted means: (B, n, C) values with (B, n) sizes -> (B, n - r, C)."""
        a, b = values[:, 0::2], values[:, 1::2]
        size_a, size_b = size[:, 0::2, None], size[:, 1::2, None]
        moved = (a * size_a).gather(1, self.merged[..., None].expand(-1, -1, a.shape[2]))
        total = (b * size_b).scatter_add(1, self.dst[..., None].expand_as(moved), moved)
        mass = size_b.scatter_add(1, self.dst[..., None], size_a.gather(1, self.merged[..., None]))
        keep = a.gather(1, self.kept[..., None].expand(-1, -1, a.shape[2]))
        return torch.cat([keep, total / mass], dim=1)

    def merged_size(self, size: Tensor) -> Tensor:
        """How many original tokens every merged token holds: (B, n) -> (B, n - r)."""
        size_a, size_b = size[:, 0::2], size[:, 1::2]
        return torch.cat([size_a.gather(1, self.kept),
                          size_b.scatter_add(1, self.dst, size_a.gather(1, self.merged))], dim=1)


def bipartite_matching(metric: Tensor, r: int, protect_first: bool = False) -> Matching:
    """ToMe's matching (Bolya et al., ICLR 2023) of one round, merging ``r`` A tokens.

    Every A token's best match is its most cosine-similar B token on ``metric`` (B, n, d);
    the ``r`` A tokens with the most similar matches are merged (ties: the earlier
    token first). ``protect_first``: the first token (a class token) is never merged.
    """
    unit = F.normalize(metric, dim=-1)
    similarity = _bmm(unit[:, 0::2], unit[:, 1::2].transpose(1, 2))   # (B, nA, nB)
    best, match = similarity.max(dim=-1)                                   # (B, nA)
    if protect_first:
        best = torch.cat([torch.full_like(best[:, :1], -math.inf), best[:, 1:]], dim=1)
    edge_order = best.argsort(dim=1, descending=True, stable=True)
    merged = edge_order[:, :r]
    return Matching(merged, edge_order[:, r:].sort(dim=1).values, match.gather(1, merged))


def merge_tokens(x: Tensor, metric: Tensor, size: Tensor, r: int,
                 protect_first: bool = True) -> Tuple[Tensor, Tensor]:
    """One ToMe step as ToMe (and Expedit-SWAG) runs it inside a layer: merge ``r`` tokens.

    x (B, n, C) the tokens (a class token first if ``protect_first``), metric (B, n, d)
    what they are matched on (ToMe: the layer's keys averaged over heads), size (B, n)
    how many original tokens each holds. ``r`` is capped at ``(n - protected) // 2``, as
    ToMe does. Returns the size-weighted merged tokens (B, n - r, C) and their sizes.
    Computed in fp32 (or wider), returned in x's dtype.
    """
    r = min(int(r), (x.shape[1] - int(protect_first)) // 2)
    if r <= 0:
        return x, size
    with torch.autocast(device_type=x.device.type, enabled=False):
        dtype = compute_dtype(x.dtype)
        size = size.to(dtype)
        matching = bipartite_matching(metric.to(dtype), r, protect_first)
        merged = matching.merge(x.to(dtype), size)
        return merged.to(x.dtype), matching.merged_size(size)


@dataclass
class MergeState:
    """source: (B, N) which reduced token every original token was merged into;
    size: (B, M) how many original tokens each reduced token holds; hw: the token grid."""

    source: Tensor
    size: Tensor
    hw: Tuple[int, int]


class BipartiteMerging(nn.Module):
    """ToMe-style bipartite soft matching (Bolya et al., ICLR 2023), one-shot to h*w tokens.

    One round: the current tokens alternate between sets A (even positions) and B (odd);
    every A token's best match is its most cosine-similar B token (on ``metric``:
    attention ``keys`` averaged over heads, passed as ``keys=`` (B, N, d), as ToMe does, or
    the ``tokens`` themselves); the ``r`` best-matched A tokens are merged into their B
    tokens by size-weighted averaging (tokens and metric alike), the result is
    ``[unmerged A in order, B]``. A round removes at most half the tokens, so rounds
    repeat (``r = min(n - h*w, |A|)``) until ``h*w`` tokens are left. Training-free:
    ToMe's proportional attention (log-size bias in later layers) is not applied.

    ``forward(tokens (B, N, C), hw, keys=None) -> (merged (B, h*w, C), MergeState)``.
    """

    def __init__(self, grid: GridSpec, metric: str = "keys") -> None:
        super().__init__()
        self.grid = validate_grid(grid, "grid")
        self.metric = validate_choice(metric, "metric", TOME_METRICS)

    @property
    def needs(self) -> Tuple[str, ...]:
        return ("keys",) if self.metric == "keys" else ()

    def extra_repr(self) -> str:
        return f"grid={self.grid}, metric={self.metric!r}"

    def forward(self, tokens: Tensor, hw: Tuple[int, int],
                keys: Optional[Tensor] = None) -> Tuple[Tensor, MergeState]:
        hw, grid = _check_input(tokens, hw, self.grid)
        B, N, C = tokens.shape
        if self.metric == "keys":
            if keys is None or keys.shape[:2] != (B, N):
                raise ValueError(f"metric='keys' needs keys of shape {(B, N)} + (d,), got "
                                 f"{None if keys is None else tuple(keys.shape)}")
            metric = keys
        else:
            metric = tokens
        budget = grid[0] * grid[1]
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            dtype = compute_dtype(tokens.dtype)
            x, m = tokens.to(dtype), metric.to(dtype)
            size = torch.ones(B, N, dtype=dtype, device=tokens.device)
            source = torch.arange(N, device=tokens.device).expand(B, N)
            while x.shape[1] > budget:
                x, m, size, source = self._round(x, m, size, source, x.shape[1] - budget)
        return x.to(tokens.dtype), MergeState(source, size, hw)

    @staticmethod
    def _round(x: Tensor, m: Tensor, size: Tensor, source: Tensor, excess: int):
        B, n, C = x.shape
        n_a, n_b = (n + 1) // 2, n // 2
        r = min(excess, n_a)
        matching = bipartite_matching(m, r)
        new_x = matching.merge(x, size)
        new_m = matching.merge(m, size) if r < excess else None   # the last round needs no metric
        new_size = matching.merged_size(size)
        # Where every current token goes: kept A rows to their rank, B rows (and the A
        # rows merged into them) after the kept A rows.
        n_kept = n_a - r
        position_a = torch.empty(B, n_a, dtype=torch.long, device=x.device)
        position_a.scatter_(1, matching.kept, torch.arange(n_kept, device=x.device).expand(B, -1))
        position_a.scatter_(1, matching.merged, n_kept + matching.dst)
        position_b = n_kept + torch.arange(n_b, device=x.device).expand(B, -1)
        position = torch.stack([position_a[:, :n_b], position_b], dim=2).flatten(1)
        if n_a > n_b:
            position = torch.cat([position, position_a[:, -1:]], dim=1)
        return new_x, new_m, new_size, position.gather(1, source)


class UnmergeReconstruction(nn.Module):
    """ToMe's unmerge: every original token takes the value of the token it was merged into.

    ``forward(merged (B, M, C), MergeState) -> (B, N, C)``.
    """

    def forward(self, reduced: Tensor, state: MergeState) -> Tensor:
        if reduced.shape[:2] != state.size.shape:
            raise ValueError(f"merged tokens of shape {tuple(reduced.shape)} do not match the "
                             f"merge state ({tuple(state.size.shape)})")
        return reduced.gather(1, state.source[..., None].expand(-1, -1, reduced.shape[2]))


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Entry:
    """A reducer or reconstructor type: its class, the kind of state it produces/accepts,
    the options a config dict may set besides ``type``, and the shared settings it takes
    from the backbone's arguments (``build_reduction``'s ``clustering`` /
    ``reconstruction``)."""

    cls: type
    state: str
    options: Tuple[str, ...] = ()
    shared: Tuple[str, ...] = ()


REDUCERS: Dict[str, Entry] = {
    "Cluster": Entry(TokenClustering, "grid", shared=("window", "iters", "temperature")),
    "AvgPool": Entry(AdaptiveAvgPoolReduction, "grid", shared=("window",)),
    "EViT": Entry(AttentiveTokenKeeping, "keep", ("score", "fuse")),
    "ToMe": Entry(BipartiteMerging, "merge", ("metric",)),
}
RECONSTRUCTORS: Dict[str, Entry] = {
    "Cluster": Entry(TokenReconstruction, "grid",
                     shared=("k", "temperature", "normalize", "neighbours", "ties")),
    "Bilinear": Entry(BilinearReconstruction, "grid"),
    "Scatter": Entry(ScatterReconstruction, "keep"),
    "Unmerge": Entry(UnmergeReconstruction, "merge"),
}
# AvgPool pairs with the method's reconstruction by default (the paper's Table 3).
DEFAULT_RECONSTRUCTOR = {"Cluster": "Cluster", "AvgPool": "Cluster", "EViT": "Scatter",
                         "ToMe": "Unmerge"}
# Reducers that produce an h x w grid (and so also work per Swin window).
GRID_REDUCERS = tuple(name for name, entry in REDUCERS.items() if entry.state == "grid")


def parse_spec(spec: Optional[Mapping[str, Any]], name: str, table: Mapping[str, Entry],
               default: str) -> Tuple[str, Dict[str, Any]]:
    """``(type, options)`` of a ``dict(type=..., **options)`` config of ``table``."""
    if spec is None:
        return default, {}
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"{name} must be None or a dict with a 'type' in {tuple(table)}, "
                         f"got {spec!r}")
    kind = spec["type"]
    if kind not in table:
        raise ValueError(f"{name} type must be one of {tuple(table)}, got {kind!r}")
    options = {k: v for k, v in spec.items() if k != "type"}
    unknown = sorted(set(options) - set(table[kind].options))
    if unknown:
        allowed = table[kind].options
        where = (f"allowed: {allowed}" if allowed else
                 "it takes none; it is configured by cluster_grid, cluster_window, "
                 "cluster_iters, temperature and reconstruct_* (the backbone's arguments)"
                 if table[kind].shared else "it takes none")
        raise ValueError(f"{name}={{'type': {kind!r}}} has unknown option(s) {unknown} ({where})")
    return kind, options


def build_entry(entry: Entry, prefix: str, shared: Mapping[str, Any], **kwargs) -> nn.Module:
    """``entry.cls`` with its shared settings (those ``shared`` holds; the class defaults
    for the others) and ``kwargs``; a ValueError names the option as ``prefix.option``."""
    try:
        return entry.cls(**{key: shared[key] for key in entry.shared if key in shared},
                         **kwargs)
    except ValueError as error:
        raise ValueError(f"{prefix}.{error}") from error


def build_reduction(reducer: Optional[Mapping[str, Any]], reconstructor: Optional[Mapping[str, Any]],
                    grid: GridSpec, clustering: Mapping[str, Any],
                    reconstruction: Mapping[str, Any],
                    allowed: Sequence[str] = tuple(REDUCERS)) -> Tuple[str, nn.Module, str, nn.Module]:
    """Build a reducer/reconstructor pair from config dicts (``None``: the method's pair).

    ``grid`` is the budget of every reducer. Every type is built the same way: its
    ``shared`` settings from ``clustering`` (window, iters, temperature) or
    ``reconstruction`` (k, temperature, normalize, neighbours, ties) -- the backbone's
    arguments -- and its own options from the config dict. ``allowed`` restricts the
    reducer types (e.g. :data:`GRID_REDUCERS` for Swin). Raises ``ValueError`` for unknown
    types/options and pairs whose states do not fit.
    Returns ``(reducer_type, reducer, reconstructor_type, reconstructor)``.
    """
    reducer_type, reducer_options = parse_spec(reducer, "reducer", REDUCERS, "Cluster")
    if reducer_type not in allowed:
        raise ValueError(f"reducer type {reducer_type!r} is not available here: allowed "
                         f"{tuple(allowed)} (EViT/ToMe keep no token grid, so they apply to "
                         f"plain ViT backbones only)")
    recon_type, recon_options = parse_spec(reconstructor, "reconstructor", RECONSTRUCTORS,
                                           DEFAULT_RECONSTRUCTOR[reducer_type])
    if REDUCERS[reducer_type].state != RECONSTRUCTORS[recon_type].state:
        fits = tuple(n for n, e in RECONSTRUCTORS.items() if e.state == REDUCERS[reducer_type].state)
        raise ValueError(f"reconstructor type {recon_type!r} cannot undo reducer "
                         f"{reducer_type!r}; use one of {fits}")
    reduce_module = build_entry(REDUCERS[reducer_type], "reducer", clustering, grid=grid,
                                **reducer_options)
    recon_module = build_entry(RECONSTRUCTORS[recon_type], "reconstructor", reconstruction,
                               **recon_options)
    return reducer_type, reduce_module, recon_type, recon_module


__all__ = ["AdaptiveAvgPoolReduction", "BilinearReconstruction", "AttentiveTokenKeeping",
           "ScatterReconstruction", "BipartiteMerging", "UnmergeReconstruction", "KeepState",
           "MergeState", "Entry", "REDUCERS", "RECONSTRUCTORS", "DEFAULT_RECONSTRUCTOR",
           "GRID_REDUCERS", "build_reduction", "build_entry", "parse_spec", "attention_guide",
           "EVIT_SCORES", "TOME_METRICS", "keep_top_tokens", "Matching", "bipartite_matching",
           "merge_tokens"]
