"""Token clustering and token reconstruction (Liang et al., NeurIPS 2022), pure torch.

The whole method lives in this file:

* :class:`TokenClustering` turns an ``H x W`` token grid into ``h x w`` centres with a
  local soft k-means (SLIC-style EM): centres start as an adaptive average pool, every
  token is softly assigned to the ``window x window`` cells around its *home cell*, and
  centres are re-estimated as the affinity-weighted mean of their tokens.
* :class:`TokenReconstruction` maps the centres back to all ``H x W`` tokens: every
  token is the weighted sum of its ``k`` nearest centres, with weights taken from the
  distances *before* the transformer layers refined the centres.

Cost. The EM never forms the dense ``N x M`` token/centre distance matrix: tokens are
grouped by tiles of home cells, the distances of a tile's tokens to the centres around
the tile (which hold all their ``lambda = window**2`` candidates) are one small matmul
per tile, and each new centre is a weighted bag of the tokens that may join it (one
``embedding_bag``), so each iteration costs O(N * lambda * C).

Numerics. Both layers compute in fp32 (autocast is switched off inside), and every
exponent is shifted by its maximum before ``exp`` so that far-apart features never
underflow to all-zero weights.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GridSpec = Union[int, float, Sequence[int]]

# One source of truth for the operators' defaults (docs/method.md) and their validation;
# the backbones' argument definitions (expedite_mm/models/expedite.py) import these.
DEFAULT_WINDOW = 5
DEFAULT_ITERS = 5
DEFAULT_TEMPERATURE = 50.0
DEFAULT_K = 20
NORMALIZATIONS = ("sum", "l2")
NEIGHBOURS = ("global", "local")
TIES = ("exact", "keep")


def _is_int(value) -> bool:
    """Any integral number (python or numpy) except bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# --------------------------------------------------------------------------- validation
def validate_grid(grid: GridSpec, name: str = "grid") -> Union[float, Tuple[int, int]]:
    """Return ``grid`` as a ratio in (0, 1] or an ``(h, w)`` pair of ints >= 1."""
    if isinstance(grid, bool):
        raise ValueError(f"{name} must be an int >= 1, an (h, w) pair or a ratio in (0, 1], got {grid!r}")
    if isinstance(grid, numbers.Real) and not _is_int(grid):
        if not 0.0 < grid <= 1.0:
            raise ValueError(f"{name} as a ratio must be in (0, 1], got {grid!r}")
        return float(grid)
    if _is_int(grid):
        grid = (grid, grid)
    try:
        pair = tuple(grid)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(g) for g in pair):
        raise ValueError(f"{name} must be an int >= 1, an (h, w) pair or a ratio in (0, 1], got {grid!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1 in both dimensions, got {grid!r}")
    return int(pair[0]), int(pair[1])


def validate_window(window: int, name: str = "window") -> int:
    if not _is_int(window) or window < 1 or window % 2 == 0:
        raise ValueError(f"{name} must be an odd int >= 1 (the lambda = window x window "
                         f"neighbourhood of a token's home cell), got {window!r}")
    return int(window)


def validate_int(value: int, name: str, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def validate_temperature(temperature: float, name: str = "temperature") -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def validate_choice(value: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 inputs (autocast or not); fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def _static_size(hw: Sequence) -> Tuple[int, int]:
    """``hw`` as python ints. Under ``torch.jit.trace`` (fvcore) sizes taken from
    ``tensor.shape`` arrive as 0-dim tensors; the cluster grid is a shape, so a trace is
    specialised to the input size anyway and reading the value is what we want."""
    return int(hw[0]), int(hw[1])


def resolve_grid(grid: GridSpec, hw: Tuple[int, int]) -> Tuple[int, int]:
    """The cluster grid ``(h, w)`` for a token grid ``hw``; a ratio is rounded per side
    (python ``round``: halves to even)."""
    grid = validate_grid(grid)
    if isinstance(grid, float):
        height, width = _static_size(hw)
        return max(1, int(round(height * grid))), max(1, int(round(width * grid)))
    return grid


def can_cluster(grid: GridSpec, hw: Tuple[int, int]) -> bool:
    """Whether clustering an ``hw`` token grid to ``grid`` gives fewer tokens: the cluster
    grid fits in both directions and has fewer cells than there are tokens."""
    h, w = resolve_grid(grid, hw)
    height, width = _static_size(hw)
    return h <= height and w <= width and h * w < height * width


# --------------------------------------------------------------------------- layout
# The EM works on *tiles*: square blocks of t x t cells, with the tokens whose home
# cells lie in the tile (``S = t*t*T`` slots, ``T`` = tokens of the largest home cell)
# against the ``K = Kr x Kc`` cells that contain all their candidates (the tile grown by
# window // 2 on each side, clipped to the grid). One matmul per tile gives every
# token's distances to its candidates; t is chosen per shape to keep that small
# (t = 1 is per-cell, t >= grid is dense within the grid, useful for Swin windows).
@dataclass(frozen=True)
class _Layout:
    """Index tables relating an ``H x W`` token grid to an ``h x w`` cell grid."""

    tile_tokens: Tensor   # (nt, S) token in each slot of each tile (0 for padding)
    block_cell: Tensor    # (nt, K) the cells each tile's tokens are compared with
    candidate: Tensor     # (nt, S, K) bool: block cell k is a candidate of slot s
    slot_valid: Tensor    # (nt, S) bool
    # Entries index the flat (nt * S * K + 1) table of a tile quantity, padded by one.
    bag_token: Tensor     # (M, L) tokens that may join cell m ...
    bag_entry: Tensor     # (M, L) ... and where their affinity to it sits (pad: last)
    token_entry: Tensor   # (N, lam) each token's candidates ...
    token_cell: Tensor    # (N, lam) ... and which cells they are (pad: 0)


def _home_slots_1d(n_tokens: int, n_cells: int) -> Tuple[Tensor, Tensor]:
    """Per cell, the token indices whose home (floor(i * n_cells / n_tokens)) it is."""
    home = torch.arange(n_tokens) * n_cells // n_tokens
    counts = torch.bincount(home, minlength=n_cells)
    starts = torch.cumsum(counts, 0) - counts
    offsets = torch.arange(int(counts.max()))
    valid = offsets[None, :] < counts[:, None]
    return torch.where(valid, starts[:, None] + offsets[None, :], 0), valid


def _tile_size(grid: Tuple[int, int], window: int, slots: int) -> int:
    """The tile side with the least estimated work (matmul MACs + gathered centres)."""
    (h, w), r = grid, window // 2

    def cost(t: int) -> int:
        tiles = math.ceil(h / t) * math.ceil(w / t)
        return tiles * (t * t * slots + 8) * min(t + 2 * r, h) * min(t + 2 * r, w)

    return min(range(1, max(h, w) + 1), key=cost)


def _group(keys: Tensor, values: Sequence[Tensor], n_keys: int, pads: Sequence[int]) -> list:
    """Scatter ``values`` into (n_keys, width) rows by key, padding short rows."""
    order = torch.argsort(keys, stable=True)
    keys = keys[order]
    counts = torch.bincount(keys, minlength=n_keys)
    position = torch.arange(len(keys)) - (torch.cumsum(counts, 0) - counts)[keys]
    rows = []
    for value, pad in zip(values, pads):
        row = torch.full((n_keys, int(counts.max())), pad, dtype=torch.long)
        row[keys, position] = value[order]
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=64)
def _layout(hw: Tuple[int, int], grid: Tuple[int, int], window: int, device: str) -> _Layout:
    # Cached across calls, so built as plain tensors whatever mode the first caller runs in
    # (an inference-mode tensor could never be saved for a later backward).
    with torch.inference_mode(False), torch.no_grad():
        return _build_layout(hw, grid, window, device)


def _build_layout(hw: Tuple[int, int], grid: Tuple[int, int], window: int, device: str) -> _Layout:
    (H, W), (h, w), r = hw, grid, window // 2
    rows, rows_valid = _home_slots_1d(H, h)                                # (h, Tr)
    cols, cols_valid = _home_slots_1d(W, w)                                # (w, Tc)
    T = rows.shape[1] * cols.shape[1]
    t = _tile_size(grid, window, T)
    n_tr, n_tc, Kr, Kc = math.ceil(h / t), math.ceil(w / t), min(t + 2 * r, h), min(t + 2 * r, w)

    def axis(n_tiles: int, size: int, k: int):
        cell = torch.arange(n_tiles)[:, None] * t + torch.arange(t)      # (tiles, t)
        start = (torch.arange(n_tiles) * t - r).clamp(0, size - k)        # block inside grid
        block = start[:, None] + torch.arange(k)                          # (tiles, k)
        near = (block[:, None, :] - cell[:, :, None]).abs() <= r          # (tiles, t, k)
        return cell.clamp(max=size - 1), cell < size, block, near

    cell_r, in_r, block_r, near_r = axis(n_tr, h, Kr)
    cell_c, in_c, block_c, near_c = axis(n_tc, w, Kc)
    # (tr, tc, a, b, ...) = tile (tr, tc), cell (a, b) inside it
    tokens = (rows[cell_r][:, None, :, None, :, None] * W
              + cols[cell_c][None, :, None, :, None, :])                  # (tr, tc, t, t, Tr, Tc)
    valid = ((rows_valid[cell_r] & in_r[..., None])[:, None, :, None, :, None]
             & (cols_valid[cell_c] & in_c[..., None])[None, :, None, :, None, :])
    block = block_r[:, None, :, None] * w + block_c[None, :, None, :]       # (tr, tc, Kr, Kc)
    near = near_r[:, None, :, None, :, None] & near_c[None, :, None, :, None, :]
    nt, S, K = n_tr * n_tc, t * t * T, Kr * Kc
    tile_tokens, slot_valid = tokens.reshape(nt, S), valid.reshape(nt, S)
    block_cell = block.reshape(nt, K)
    candidate = near.reshape(nt, t * t, 1, K).expand(nt, t * t, T, K).reshape(nt, S, K)

    entries = torch.nonzero((candidate & slot_valid[..., None]).flatten()).flatten()
    tile, slot, k = entries // (S * K), entries // K % S, entries % K
    cell, token = block_cell[tile, k], tile_tokens[tile, slot]
    bag_token, bag_entry = _group(cell, (token, entries), h * w, (0, nt * S * K))
    token_entry, token_cell = _group(token, (entries, cell), H * W, (nt * S * K, 0))
    tensors = (tile_tokens, block_cell, candidate, slot_valid, bag_token, bag_entry,
               token_entry, token_cell)
    return _Layout(*(x.to(device) for x in tensors))


def _tile_sqdist(tiled: Tensor, tiled_sq: Tensor, centers: Tensor, layout: _Layout) -> Tensor:
    """Squared distances of the tokens of every tile to its block of centres.

    tiled: (B, nt, S, C) tokens by tile, tiled_sq: their squared norms (B, nt, S, 1),
    centers: (B, M, C). Returns (B, nt, S, K); only ``layout.candidate`` entries matter.
    """
    B, nt, S, C = tiled.shape
    K = layout.block_cell.shape[1]
    flat = layout.block_cell.flatten()
    block = centers.index_select(1, flat).view(B * nt, K, C)
    dot = torch.bmm(tiled.view(B * nt, S, C), block.transpose(1, 2)).view(B, nt, S, K)
    block_sq = centers.pow(2).sum(-1).index_select(1, flat).view(B, nt, 1, K)
    return (tiled_sq + block_sq - 2 * dot).clamp_min_(0)


def _tile_tokens(z: Tensor, layout: _Layout) -> Tuple[Tensor, Tensor]:
    """(B, N, C) -> tokens by tile (B, nt, S, C) and their squared norms (B, nt, S, 1)."""
    tiled = z.index_select(1, layout.tile_tokens.flatten()).view(
        z.shape[0], *layout.tile_tokens.shape, z.shape[2])
    return tiled, tiled.pow(2).sum(-1, keepdim=True)


# --------------------------------------------------------------------------- clustering
@dataclass
class ClusterState:
    """What reconstruction needs from clustering (in fp32 or wider).

    tokens: (B, N, C) the clustered tokens Z_alpha; centers: (B, M, C) the centres
    S_alpha before refinement; hw / grid: token and cell grid sizes; window: the EM
    neighbourhood (used by local reconstruction).
    """

    tokens: Tensor
    centers: Tensor
    hw: Tuple[int, int]
    grid: Tuple[int, int]
    window: int
    _neighbours: Dict[tuple, Tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def layout(self) -> _Layout:
        return _layout(self.hw, self.grid, self.window, str(self.tokens.device))


class TokenClustering(nn.Module):
    """Local soft k-means of a token grid into a smaller grid of centres.

    Args:
        grid: cluster grid ``h x w`` as an int, an ``(h, w)`` pair, or a ratio in
            (0, 1] of the token grid (resolved per input, e.g. 0.7 maps 40x40 to 28x28).
        window: odd side of the ``lambda = window**2`` cells a token may join.
        iters: EM iterations (kappa).
        temperature: tau in ``softmax(-D / tau)``.

    ``forward(tokens (B, N, C), hw=(H, W)) -> (centers (B, h*w, C), ClusterState)``.
    """

    def __init__(self, grid: GridSpec, window: int = DEFAULT_WINDOW,
                 iters: int = DEFAULT_ITERS, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__()
        self.grid = validate_grid(grid, "grid")
        self.window = validate_window(window, "window")
        self.iters = validate_int(iters, "iters", 1)
        self.temperature = validate_temperature(temperature, "temperature")

    def extra_repr(self) -> str:
        return (f"grid={self.grid}, window={self.window}, iters={self.iters}, "
                f"temperature={self.temperature}")

    def forward(self, tokens: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, ClusterState]:
        B, N, C = tokens.shape
        hw = (int(hw[0]), int(hw[1]))
        if hw[0] * hw[1] != N:
            raise ValueError(f"hw={hw} does not match the {N} tokens given")
        grid = resolve_grid(self.grid, hw)
        if grid[0] > hw[0] or grid[1] > hw[1]:
            raise ValueError(f"cluster grid {grid} is larger than the token grid {hw}")
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            z = tokens.to(compute_dtype(tokens.dtype))
            layout = _layout(hw, grid, self.window, str(z.device))
            centers = self._em(z, hw, grid, layout)
        state = ClusterState(z, centers, hw, grid, self.window)
        return centers.to(tokens.dtype), state

    def _em(self, z: Tensor, hw: Tuple[int, int], grid: Tuple[int, int], layout: _Layout) -> Tensor:
        B, N, C = z.shape
        M = grid[0] * grid[1]
        centers = F.adaptive_avg_pool2d(z.transpose(1, 2).reshape(B, C, *hw), grid)
        centers = centers.flatten(2).transpose(1, 2)                          # (B, M, C)
        tiled, tiled_sq = _tile_tokens(z, layout)
        # Padding slots keep finite logits (no all -inf rows); they are never read.
        excluded = ~layout.candidate & layout.slot_valid[..., None]           # (nt, S, K)
        bag = layout.bag_token + N * torch.arange(B, device=z.device).view(B, 1, 1)
        bag = bag.view(B * M, -1)
        for _ in range(self.iters):
            dist = _tile_sqdist(tiled, tiled_sq, centers, layout)
            # log Q[p, i]: softmax over the candidates of each token (max-shifted) ...
            log_q = torch.log_softmax((dist / -self.temperature).masked_fill(excluded, -math.inf), -1)
            # ... then S_i = sum_p Q[p,i] Z_p / sum_p Q[p,i], over the bag of tokens that
            # may join centre i. Each bag's weights are shifted by their maximum first
            # (the result does not depend on the shift, hence no_grad), so that no
            # centre's mass underflows to zero when features are far apart.
            log_q = F.pad(log_q.reshape(B, -1), (0, 1), value=-math.inf)
            bag_log_q = log_q[:, layout.bag_entry]                           # (B, M, L)
            with torch.no_grad():
                peak = bag_log_q.amax(-1, keepdim=True)
            weight = torch.exp(bag_log_q - peak)
            num = F.embedding_bag(bag, z.reshape(B * N, C), mode="sum",
                                  per_sample_weights=weight.reshape(B * M, -1))
            centers = num.view(B, M, C) / weight.sum(-1, keepdim=True)
        return centers


# --------------------------------------------------------------------------- reconstruction
class TokenReconstruction(nn.Module):
    """Restore ``H x W`` tokens from (refined) cluster centres.

    ``Z'_p = sum_{i in kNN(p)} w[p, i] * S'_i`` with ``w ~ exp(-||Z_p - S_i||^2 / tau)``
    measured between the clustered tokens and the centres *before* refinement.

    Args:
        k: neighbours per token (capped at the number of centres).
        temperature: tau.
        normalize: ``"sum"`` (paper Eq. 4, weights sum to 1) or ``"l2"`` (the released
            code's ``F.normalize``: unit L2 norm; use it to reproduce released numbers).
        neighbours: ``"global"`` (k nearest of all centres) or ``"local"`` (the
            clustering's own ``window x window`` candidate cells; ``k`` is not used).
        ties: ``"exact"`` (exactly k centres) or ``"keep"`` (global neighbours: also every
            centre at the same distance as the k-th, as the released code's
            ``weight >= kth`` selection does; identical centres, e.g. of pure padding, tie).

    ``forward(centers (B, M, C), state) -> tokens (B, N, C)``.
    """

    def __init__(self, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
                 normalize: str = "sum", neighbours: str = "global", ties: str = "exact") -> None:
        super().__init__()
        self.k = validate_int(k, "k", 1)
        self.temperature = validate_temperature(temperature, "temperature")
        self.normalize = validate_choice(normalize, "normalize", NORMALIZATIONS)
        self.neighbours = validate_choice(neighbours, "neighbours", NEIGHBOURS)
        self.ties = validate_choice(ties, "ties", TIES)

    def extra_repr(self) -> str:
        return (f"k={self.k}, temperature={self.temperature}, normalize={self.normalize!r}, "
                f"neighbours={self.neighbours!r}, ties={self.ties!r}")

    def weights(self, state: ClusterState) -> Tuple[Tensor, Tensor]:
        """(index (B, N, k'), weight (B, N, k')) of every token's centres; memoised on state."""
        key = (self.k, self.temperature, self.normalize, self.neighbours, self.ties)
        if key not in state._neighbours:
            with torch.autocast(device_type=state.tokens.device.type, enabled=False):
                state._neighbours[key] = self._weights(state)
        return state._neighbours[key]

    def _weights(self, state: ClusterState) -> Tuple[Tensor, Tensor]:
        z, s = state.tokens, state.centers
        B, N, C = z.shape
        M = s.shape[1]
        if self.neighbours == "global":
            dist = (z.pow(2).sum(-1, keepdim=True) + s.pow(2).sum(-1).unsqueeze(1)
                    - 2 * torch.bmm(z, s.transpose(1, 2))).clamp_min_(0)     # (B, N, M)
            nearest, index = dist.topk(min(self.k, M), dim=-1, largest=False)
            if self.ties == "keep" and self.k < M:
                # every centre as near as the k-th: widen the top-k to the most ties any
                # token has (a data-dependent size, so this mode is eager-only)
                kth = nearest[..., -1:]
                widest = int((dist <= kth).sum(-1).max())
                if widest > nearest.shape[-1]:
                    nearest, index = dist.topk(widest, dim=-1, largest=False)
                nearest = nearest.masked_fill(nearest > kth, math.inf)
            dist = nearest
        else:
            layout = state.layout
            tiled, tiled_sq = _tile_tokens(z, layout)
            dist = _tile_sqdist(tiled, tiled_sq, s, layout)
            # Padding entries (tokens with fewer than lam candidates) get weight exp(-inf).
            dist = F.pad(dist.reshape(B, -1), (0, 1), value=math.inf)
            dist = dist[:, layout.token_entry]                                # (B, N, lam)
            index = layout.token_cell.expand(B, -1, -1)
        shifted = dist - dist.amin(dim=-1, keepdim=True)
        weight = torch.exp(shifted / -self.temperature)
        if self.normalize == "sum":
            weight = weight / weight.sum(-1, keepdim=True)
        else:
            weight = F.normalize(weight, p=2.0, dim=-1)
        return index, weight

    def forward(self, centers: Tensor, state: ClusterState) -> Tensor:
        B, M, C = centers.shape
        if M != state.centers.shape[1] or B != state.centers.shape[0]:
            raise ValueError(f"centers of shape {tuple(centers.shape)} do not match the "
                             f"clustering state ({tuple(state.centers.shape)})")
        index, weight = self.weights(state)
        with torch.autocast(device_type=centers.device.type, enabled=False):
            out = weighted_gather(centers.to(compute_dtype(centers.dtype)), index, weight)
        return out.to(centers.dtype)


def weighted_gather(values: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """``out[b, n] = sum_j weight[b, n, j] * values[b, index[b, n, j]]``.

    values (B, M, C), index/weight (B, N, k) -> (B, N, C), in O(N * k * C) without
    materialising the (B, N, k, C) gather (one ``embedding_bag``).
    """
    B, M, C = values.shape
    N, k = index.shape[1:]
    flat = (index + torch.arange(B, device=index.device).view(B, 1, 1) * M).reshape(B * N, k)
    out = F.embedding_bag(flat, values.reshape(B * M, C), mode="sum",
                          per_sample_weights=weight.reshape(B * N, k).to(values.dtype))
    return out.view(B, N, C)
