"""Token clustering and token reconstruction (Liang et al., NeurIPS 2022), pure torch.

The whole method lives in this file:

* :class:`TokenClustering` turns an ``H x W`` token grid into ``h x w`` centres with a
  local soft k-means (SLIC-style EM): centres start as an adaptive average pool, every
  token is softly assigned to the ``window x window`` cells around its *home cell*, and
  centres are re-estimated as the affinity-weighted mean of their tokens.
* :class:`TokenReconstruction` maps the centres back to all ``H x W`` tokens: every
  token is the weighted sum of its ``k`` nearest centres, with weights taken from the
  distances *before* the transformer layers refined the centres.

Cost. The EM never forms the dense ``N x M`` token/centre distance matrix: centres are
kept in tiles of t x t cells, and each tile only meets the tokens that have a candidate in
it (gathered once). Every centre is a weighted mean of its tile's tokens, so the EM runs
on those weights. For wide tokens (C at least the S tokens of a tile: ViT-B/L, Swin's
stage 3) an iteration takes its distances from the Gram matrix of each tile's tokens
(computed once), a (T x S) @ (S x S) product per tile whatever C, and the centres are
formed once, at the end; narrow tokens form the centres and their distances in every
iteration (``_plan`` picks the form and the tile
size ``t`` per shape). The index tables are pure functions of the shapes, so the whole
layer is static: it exports to ONNX and compiles with ``torch.compile(fullgraph=True)``.

Numerics. Both layers compute in fp32 (autocast is switched off inside), and every
exponent is shifted by its maximum before ``exp`` so that far-apart features never
underflow to all-zero weights.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat import FULLGRAPH_COMPILE, is_compiling, is_exporting

GridSpec = Union[int, float, Sequence[int]]

# One source of truth for the operators' defaults (docs/method.md) and their validation;
# the backbones' argument definitions (expedite_mm/core/args.py) import these.
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
    """``window`` as an int if it is an odd int >= 1; else a ValueError naming ``name``."""
    if not _is_int(window) or window < 1 or window % 2 == 0:
        raise ValueError(f"{name} must be an odd int >= 1 (the lambda = window x window "
                         f"neighbourhood of a token's home cell), got {window!r}")
    return int(window)


def validate_int(value: int, name: str, minimum: int) -> int:
    """``value`` as an int if it is an integral number >= ``minimum`` (bools are not)."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def validate_temperature(temperature: float, name: str = "temperature") -> float:
    """``temperature`` as a float if it is a finite number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def validate_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
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
    """The cluster grid for one token grid.

    Args:
        grid: an int, an ``(h, w)`` pair, or a ratio in (0, 1] of the token grid.
        hw: the token grid ``(H, W)`` (ints, or 0-dim tensors under tracing).

    Returns:
        ``(h, w)``; a ratio is rounded per side (python ``round``: halves to even), at
        least 1.
    """
    grid = validate_grid(grid)
    if isinstance(grid, float):
        height, width = _static_size(hw)
        return max(1, int(round(height * grid))), max(1, int(round(width * grid)))
    return grid


def can_cluster(grid: GridSpec, hw: Tuple[int, int]) -> bool:
    """Whether clustering an ``hw`` token grid to ``grid`` gives fewer tokens.

    Args:
        grid: the cluster grid, as for :func:`resolve_grid`.
        hw: the token grid ``(H, W)``.

    Returns:
        True if the cluster grid fits in both directions and has fewer cells than there
        are tokens (otherwise the backbones run their stock forward).
    """
    h, w = resolve_grid(grid, hw)
    height, width = _static_size(hw)
    return h <= height and w <= width and h * w < height * width


# --------------------------------------------------------------------------- layout
# The EM works on *tiles* of t x t cells (``T = t*t`` centres). Tile j meets the tokens
# that have a candidate in it -- those whose home cell lies in the tile grown by
# window // 2 cells on each side (at least one: the initial pooling regions reach one cell
# further than the home cells) -- in ``S`` slots: a rectangle of tokens, padded to the
# largest tile, gathered once. Each centre is a weighted mean of its tile's slots
# (``weights @ slots``), starting from the adaptive-average-pooling weights; the
# distances an iteration needs follow from the weights and the slots' Gram matrix. A
# token's softmax spans the candidates it has in the few tiles its window overlaps. The
# tables depend on the shapes only: they are built with numpy (so no tracer --
# torch.compile, torch.export, ONNX -- sees how, only the constants) and cached per device.
class _Layout(NamedTuple):
    """Index tables relating an ``H x W`` token grid to an ``h x w`` cell grid."""

    slot_token: Tensor    # (nt * S,) the token in each slot of each tile (padding: a real one)
    cell_position: Tensor  # (M,) where each cell sits in the flat (nt * T) tiles
    outside: Tensor       # (nt, T, S) bool: slot s is not a candidate token of cell t
    cell_valid: Tensor    # (nt, T) bool: the position holds a cell (not padding)
    token_pair: Tensor    # (N, lam) each token's candidates in the flat (nt * T * S) tiles
    token_cell: Tensor    # (N, lam) ... and which cells they are (pad: pair nt*T*S, cell 0)
    pool_weight: Tensor   # (nt, T, S) float64 adaptive-average-pooling weights (initial centres)
    tile_cell: Tensor     # (nt * T,) the cell at each position of each tile (padding: 0)


def _axis_tiles(n_tokens: int, n_cells: int, t: int, r: int):
    """One axis: every tile's cells (tiles, t), its slots (tiles, L) -- the tokens within
    ``max(r, 1)`` cells of it -- whether a slot is real, which slots are within r cells
    of each cell (tiles, L, t), and the pooling weight of each slot for each cell."""
    home, first, counts = _slot_ranges(n_tokens, n_cells, t, r)
    cells = np.arange(len(first))[:, None] * t + np.arange(t)           # (tiles, t)
    offsets = np.arange(counts.max())
    slot_valid = offsets[None, :] < counts[:, None]                     # (tiles, L)
    slots = first[:, None] + np.where(slot_valid, offsets[None, :], 0)
    near = (np.abs(home[slots][:, :, None] - cells[:, None, :]) <= r) & slot_valid[:, :, None]
    pool = np.vstack([_pool_matrix(n_tokens, n_cells), np.zeros((t, n_tokens))])
    pool = np.take_along_axis(pool[cells], slots[:, None, :], 2) * slot_valid[:, None, :]
    # every pooling region lies within one cell of its cell's home tokens
    assert np.allclose(pool.sum(2)[cells < n_cells], 1.0)
    return slots, slot_valid, cells, near, pool.transpose(0, 2, 1)     # pool: (tiles, L, t)


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-d adaptive average pooling (torch's regions)."""
    start = np.arange(n_out) * n_in // n_out
    end = -(-(np.arange(1, n_out + 1) * n_in) // n_out)
    inside = (np.arange(n_in) >= start[:, None]) & (np.arange(n_in) < end[:, None])
    return inside / (end - start)[:, None]


def _slot_ranges(n_tokens: int, n_cells: int, t: int, r: int):
    """One axis: every token's home cell (nearest-resize label), and for every tile of
    ``t`` cells the first of its slots and their number: the tokens whose home cell lies
    within ``max(r, 1)`` cells of the tile."""
    home = np.arange(n_tokens) * n_cells // n_tokens
    reach = max(r, 1)
    starts = np.arange(0, n_cells, t)
    first = np.searchsorted(home, np.maximum(starts - reach, 0), side="left")
    last = np.searchsorted(home, np.minimum(starts + t - 1 + reach, n_cells - 1), side="right")
    return home, first, last - first


def _plan(hw: Tuple[int, int], grid: Tuple[int, int], window: int, width: int,
          iters: int) -> Tuple[int, bool]:
    """The EM's tile side and form for one shape (see ``_plan_arrays``)."""
    return _plan_arrays(hw, grid, window, int(width), iters)


@functools.lru_cache(maxsize=256)
def _plan_arrays(hw: Tuple[int, int], grid: Tuple[int, int], window: int, width: int,
                 iters: int) -> Tuple[int, bool]:
    """The tile side and whether the EM goes through the tiles' Gram matrices, whichever
    has the least estimated work (multiply-adds, plus ``_READ_COST`` for every token and
    channel a pass over the tiles reads):

    * centres formed every iteration: two (T x S) x (S x C)-sized products per iteration
      in one pass;
    * Gram form: the (S x C) x (C x S) Gram product and the final (T x S) x (S x C)
      weighted sum once, plus one (T x S) x (S x S) product per iteration; only where
      ``S <= C``, so that it never needs more memory than the tiles themselves.
    """
    best = None
    for t in range(1, max(grid) + 1):
        _, _, rows = _slot_ranges(hw[0], grid[0], t, window // 2)
        _, _, cols = _slot_ranges(hw[1], grid[1], t, window // 2)
        tiles, T, S = len(rows) * len(cols), t * t, int(rows.max() * cols.max())
        explicit = tiles * iters * S * width * (2 * T + _READ_COST)
        gram = tiles * (S * width * (S + T + 2 * _READ_COST) + iters * T * S * S)
        # the Gram form only where its (S x S) matrices are no larger than the tiles' tokens
        forms = ((explicit, False), (gram, True)) if S <= width else ((explicit, False),)
        for cost, form in forms:
            if best is None or cost < best[0]:
                best = (cost, t, form)
    return best[1], best[2]


# Cost of streaming one token (per channel) through a matmul, relative to a multiply-add:
# the iterations' T x S products are thin and bound by reading the tiles' tokens.
_READ_COST = 32


@functools.lru_cache(maxsize=64)
def _layout_arrays(hw: Tuple[int, int], grid: Tuple[int, int], window: int,
                   t: int) -> Tuple[np.ndarray, ...]:
    (H, W), (h, w), r = hw, grid, window // 2
    slots_r, valid_r, cells_r, near_r, pool_r = _axis_tiles(H, h, t, r)
    slots_c, valid_c, cells_c, near_c, pool_c = _axis_tiles(W, w, t, r)
    nt = len(slots_r) * len(slots_c)
    # (a, b, ...): tile row a, tile column b
    slot_token = (slots_r[:, None, :, None] * W + slots_c[None, :, None, :]).reshape(nt, -1)
    cell_valid = ((cells_r < h)[:, None, :, None] & (cells_c < w)[None, :, None, :]).reshape(nt, -1)
    tile_cell = np.where(cell_valid, (cells_r[:, None, :, None]
                                      * w + cells_c[None, :, None, :]).reshape(nt, -1), 0)
    candidate = (near_r[:, None, :, None, :, None] & near_c[None, :, None, :, None, :]).reshape(
        nt, slot_token.shape[1], -1) & cell_valid[:, None, :]
    candidate = np.ascontiguousarray(candidate.transpose(0, 2, 1))             # (nt, T, S)
    pool = (pool_r[:, None, :, None, :, None] * pool_c[None, :, None, :, None, :]).reshape(
        nt, slot_token.shape[1], -1).transpose(0, 2, 1)                        # (nt, T, S)
    T, S = candidate.shape[1:]
    cell_position = np.empty(h * w, dtype=np.int64)
    cell_position[tile_cell[cell_valid]] = np.nonzero(cell_valid.reshape(-1))[0]
    # every token's candidates: (position, slot) pairs in the flat (nt * T * S) tiles
    pairs = np.nonzero(candidate.reshape(-1))[0]
    pair_token = slot_token.reshape(-1)[pairs // (T * S) * S + pairs % S]
    token_pair = _rows(pair_token, pairs, H * W, nt * T * S)
    pair = np.minimum(token_pair, nt * T * S - 1)
    token_cell = np.where(token_pair < nt * T * S, tile_cell.reshape(-1)[pair // S], 0)
    return (slot_token.reshape(-1), cell_position, ~candidate, cell_valid, token_pair,
            token_cell, pool, tile_cell.reshape(-1))


def _rows(keys: np.ndarray, values: np.ndarray, n_keys: int, pad: int) -> np.ndarray:
    """``values`` grouped into (n_keys, width) rows by ``keys`` (in order), padded."""
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    counts = np.bincount(keys, minlength=n_keys)
    position = np.arange(len(keys)) - (np.cumsum(counts) - counts)[keys]
    out = np.full((n_keys, counts.max()), pad, dtype=np.int64)
    out[keys, position] = values
    return out


def _to_tensors(arrays: Sequence[np.ndarray], device: str) -> _Layout:
    return _Layout(*(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays))


@functools.lru_cache(maxsize=64)
def _layout_tensors(hw: Tuple[int, int], grid: Tuple[int, int], window: int, tile: int,
                    device: str) -> _Layout:
    # Plain tensors whatever the caller's mode: built under inference_mode they would be
    # inference tensors, which autograd refuses to save for a later backward pass.
    with torch.inference_mode(False), torch.no_grad():
        return _to_tensors(_layout_arrays(hw, grid, window, tile), device)


def _layout(hw: Tuple[int, int], grid: Tuple[int, int], window: int, tile: int,
            device: str) -> _Layout:
    """The index tables for one shape and tile side, on ``device``: constants of the graph
    when traced."""
    if is_compiling() or is_exporting():
        return _to_tensors(_layout_arrays(hw, grid, window, tile), device)
    return _layout_tensors(hw, grid, window, tile, device)


# The index tables are constants of a traced graph: exactly what the public
# ``torch.compiler.assume_constant_result`` marks on a function, without calling it,
# because it imports torch._dynamo, which on import (torch 2.13) costs 3-4 s and installs
# seven process-wide warning filters (one ignores every torch.jit TracerWarning) -- not
# what importing the operators may do. tests/core/test_core.py checks that the mark is the
# public API's, tests/apis/test_deploy.py that the operators compile without a graph break.
# torch 2.1's dynamo fails on the marked tables (an internal assertion); unmarked, it
# compiles around them with graph breaks (FULLGRAPH_COMPILE, expedite_mm/compat.py).
if FULLGRAPH_COMPILE:
    _layout._dynamo_marked_constant = True
    _plan._dynamo_marked_constant = True


def _by_tile(values: Tensor, index: Tensor, nt: int) -> Tensor:
    """(B, n, ...) -> (B, nt, n', ...): rows picked by a flat per-tile index."""
    return values.index_select(1, index).view(values.shape[0], nt, -1, *values.shape[2:])


def _tile_logits(slots: Tensor, centers: Tensor, temperature: float) -> Tensor:
    """``-||z_p - s_i||^2 / tau`` up to a per-token constant, for every centre and slot of
    every tile.

    slots: (B, nt, S, C) the tokens of every tile; centers: (B, nt, T, C) tile by tile.
    Returns (B, nt, T, S). ``||z_p||^2`` is the same for all of a token's centres and is
    left out: the softmax over the candidates, the nearest centres and the min-shifted
    weights do not depend on it.
    """
    B, nt, S, C = slots.shape
    T = centers.shape[2]
    squares = (centers * centers).sum(-1).view(B * nt, T, 1)
    logits = torch.baddbmm(squares, centers.reshape(B * nt, T, C),
                           slots.reshape(B * nt, S, C).transpose(1, 2),
                           beta=-1.0 / temperature, alpha=2.0 / temperature)
    return logits.view(B, nt, T, S)


def _gram_logits(weight: Tensor, gram: Tensor, temperature: float) -> Tensor:
    """:func:`_tile_logits` for the centres ``weight @ slots``, from the slots' Gram matrix.

    weight: (B, nt, T, S); gram: (B, nt, S, S) = slots @ slots^T. Returns (B, nt, T, S):
    ``(2 s_i.z_p - ||s_i||^2) / tau`` with ``s_i.z_p = (weight @ gram)[i, p]``.
    """
    projection = torch.matmul(weight, gram)
    squares = (projection * weight).sum(-1, keepdim=True)
    return (projection - 0.5 * squares) * (2.0 / temperature)


def _assignment(logits: Tensor, layout: _Layout) -> Tensor:
    """The M step's weights: Q[p, i] normalised over each centre's tokens.

    ``Q[p, i] = softmax_i`` of the logits over token p's candidate cells (which may lie in
    several tiles), then each centre's weights are divided by their sum (the affinity
    mass), so ``weights @ slots`` are the new centres. logits: (B, nt, T, S) -> (B, nt, T, S),
    zero outside the candidates and on padding.
    """
    B, nt = logits.shape[:2]
    per_token = F.pad(logits.flatten(1), (0, 1), value=-math.inf)[:, layout.token_pair]
    log_q = logits - _by_tile(torch.logsumexp(per_token, -1), layout.slot_token, nt).unsqueeze(2)
    # Each centre's weights are shifted by their maximum (the ratio does not depend on the
    # shift, hence no_grad), so that no centre's mass underflows when features are far
    # apart. Exponents are clamped at fp32's smallest normal: what lies below is below
    # fp32's resolution next to the maximum's exp(0) = 1 anyway, and subnormal (or -inf)
    # arguments make exp several times slower on x86.
    with torch.no_grad():
        peak = log_q.masked_fill(layout.outside, -math.inf).amax(3, keepdim=True)
        peak = peak.masked_fill(~layout.cell_valid[..., None], 0)
    lowest = math.log(torch.finfo(logits.dtype).tiny)
    weight = torch.exp((log_q - peak).clamp(min=lowest)).masked_fill(layout.outside, 0)
    mass = weight.sum(3, keepdim=True).masked_fill(~layout.cell_valid[..., None], 1)
    return weight / mass


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

    @property
    def layout(self) -> _Layout:
        """Tiles for one pass of distances (what local reconstruction needs)."""
        tile, _ = _plan(self.hw, self.grid, self.window, self.tokens.shape[-1], 1)
        return _layout(self.hw, self.grid, self.window, tile, str(self.tokens.device))


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

    def forward(self, tokens: Tensor, hw: Tuple[int, int],
                grid: Optional[GridSpec] = None) -> Tuple[Tensor, ClusterState]:
        """Cluster the tokens.

        Args:
            tokens: (B, N, C), N = H * W.
            hw: the token grid (H, W).
            grid: the cluster grid for this call instead of ``self.grid`` (window
                clustering gives edge windows fewer centres).

        Returns:
            The centres (B, h*w, C), in the tokens' dtype, and the :class:`ClusterState`
            reconstruction needs.
        """
        B, N, C = tokens.shape
        hw = (int(hw[0]), int(hw[1]))
        if hw[0] * hw[1] != N:
            raise ValueError(f"hw={hw} does not match the {N} tokens given")
        grid = resolve_grid(self.grid if grid is None else grid, hw)
        if grid[0] > hw[0] or grid[1] > hw[1]:
            raise ValueError(f"cluster grid {grid} is larger than the token grid {hw}")
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            z = tokens.to(compute_dtype(tokens.dtype))
            tile, use_gram = _plan(hw, grid, self.window, C, self.iters)
            layout = _layout(hw, grid, self.window, tile, str(z.device))
            centers = self._em(z, layout, use_gram)
        state = ClusterState(z, centers, hw, grid, self.window)
        return centers.to(tokens.dtype), state

    def _em(self, z: Tensor, layout: _Layout, use_gram: bool) -> Tensor:
        B = z.shape[0]
        nt, T, S = layout.outside.shape
        # Distances do not change when all tokens move by the same vector and the centres
        # are weighted means, so the EM runs on tokens centred on their mean: the dot
        # products no longer carry a large common component, which fp32 would cancel.
        offset = z.mean(1, keepdim=True)
        slots = _by_tile(z - offset, layout.slot_token, nt)                    # (B,nt,S,C)
        if use_gram:
            gram = torch.matmul(slots, slots.transpose(2, 3))                   # (B,nt,S,S)
        weight = layout.pool_weight.to(z.dtype).expand(B, nt, T, S)  # the initial centres
        for _ in range(self.iters):
            if use_gram:
                logits = _gram_logits(weight, gram, self.temperature)
            else:
                logits = _tile_logits(slots, torch.matmul(weight, slots), self.temperature)
            weight = _assignment(logits, layout)                                 # (B,nt,T,S)
        centers = torch.matmul(weight, slots)                                   # (B,nt,T,C)
        return centers.flatten(1, 2).index_select(1, layout.cell_position) + offset


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
        ties: ``"exact"`` (exactly k centres; of centres tied at the k-th -- the same centre
            up to rounding, e.g. of pure padding -- those with the lowest indices, on every
            platform: :func:`first_of_ties`) or ``"keep"`` (global neighbours: also every
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
        """(index (B, N, k'), weight (B, N, k')) of every token's centres.

        ``"local"``: the token's candidate cells (``k' = lambda``; a token near the border
        of the grid has fewer, padded with index 0 and weight 0). A caller that
        reconstructs several times from one state computes them once and passes them to
        :meth:`forward`.
        """
        with torch.autocast(device_type=state.tokens.device.type, enabled=False):
            return self._weights(state)

    def _weights(self, state: ClusterState) -> Tuple[Tensor, Tensor]:
        offset = state.tokens.mean(1, keepdim=True)       # as in the EM: centred, same distances
        z, s = state.tokens - offset, state.centers - offset
        B = z.shape[0]
        if self.neighbours == "global":
            # ||s||^2 - 2 z.s: the squared distance up to ||z||^2, the same for all of a
            # token's centres (so the same neighbours and min-shifted weights).
            squares = s.pow(2).sum(-1).unsqueeze(1)                             # (B, 1, M)
            relative = torch.baddbmm(squares, z, s.transpose(1, 2), alpha=-2)   # (B, N, M)
            M = s.shape[1]
            if self.ties == "exact":
                # the k nearest; of identical centres at the k-th (pure padding's: equal up
                # to rounding, which differs between CPUs) those with the lowest indices
                dist, index = first_of_ties(relative, min(self.k, M),
                                            tie_tolerance(z, s, squares), squares)
            else:
                dist, index = smallest(relative, min(self.k, M))
            if self.ties == "keep" and self.k < M:
                # every centre as near as the k-th. Eagerly: widen the selection to the most
                # ties any token has (a data-dependent size); traced (compile, export): all
                # M centres, the others masked (static shapes, the same weights).
                # "as near" up to the rounding of the distance products (8 ulps of the
                # squared norms), so that identical centres tie whatever the summation
                # order of the backend (ONNX Runtime's differs from ours)
                kth = dist[..., -1:] + tie_tolerance(z, s, squares)
                if (is_compiling() or is_exporting()
                        or torch.onnx.is_in_onnx_export()):
                    dist = relative.masked_fill(relative > kth, math.inf)
                    index = torch.arange(M, device=z.device).expand(B, relative.shape[1], M)
                else:
                    widest = int((relative <= kth).sum(-1).max())
                    if widest > dist.shape[-1]:
                        dist, index = relative.topk(widest, dim=-1, largest=False)
                    dist = dist.masked_fill(dist > kth, math.inf)
        else:
            layout = state.layout
            nt = layout.outside.shape[0]
            logits = _tile_logits(_by_tile(z, layout.slot_token, nt),
                                  _by_tile(s, layout.tile_cell, nt), 1.0)        # (B,nt,T,S)
            # padding entries (tokens with fewer than lambda candidates): weight exp(-inf)
            dist = F.pad(-logits.flatten(1), (0, 1), value=math.inf)[:, layout.token_pair]
            index = layout.token_cell.expand(B, -1, -1)
        weight = torch.exp((dist - dist.amin(dim=-1, keepdim=True)) / -self.temperature)
        if self.normalize == "sum":
            weight = weight / weight.sum(-1, keepdim=True)
        else:
            weight = F.normalize(weight, p=2.0, dim=-1)
        return index, weight

    def forward(self, centers: Tensor, state: ClusterState,
                weights: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Reconstruct the tokens.

        Args:
            centers: (B, M, C) the centres after the layers that refined them (or any
                per-centre values, e.g. a head's logits).
            state: the :class:`ClusterState` of the clustering that made them.
            weights: what :meth:`weights` returns for ``state`` (computed if not given).

        Returns:
            (B, N, C) in the centres' dtype.
        """
        B, M, C = centers.shape
        if M != state.centers.shape[1] or B != state.centers.shape[0]:
            raise ValueError(f"centers of shape {tuple(centers.shape)} do not match the "
                             f"clustering state ({tuple(state.centers.shape)})")
        index, weight = self.weights(state) if weights is None else weights
        with torch.autocast(device_type=centers.device.type, enabled=False):
            out = weighted_gather(centers.to(compute_dtype(centers.dtype)), index, weight)
        return out.to(centers.dtype)


def tie_tolerance(tokens: Tensor, centers: Tensor,
                  center_squares: Optional[Tensor] = None) -> Tensor:
    """How far above a token's k-th centre distance another centre still ties with it.

    8 ulps of the squared norms that the Gram-form distance ``||s||^2 - 2 z.s`` sums:
    identical centres then tie whatever the summation order of the backend.

    Args:
        tokens: (B, N, C) centred tokens.
        centers: (B, M, C) centres, centred by the same offset.
        center_squares: the centres' squared norms, (B, M) or (B, 1, M), where the caller
            has them already (the same numbers).

    Returns:
        (B, N, 1) tolerance in the tokens' dtype.
    """
    if center_squares is None:
        center_squares = centers.pow(2).sum(-1)
    # the tokens' squared norms without an (N, C) temporary (a tolerance: any rounding does)
    token_squares = torch.linalg.vector_norm(tokens, dim=-1, keepdim=True).square()
    scale = token_squares + center_squares.flatten(1).amax(-1)[:, None, None]
    return 8 * torch.finfo(tokens.dtype).eps * scale


def first_of_ties(values: Tensor, k: int, tolerance: Tensor,
                  keys: Tensor) -> Tuple[Tensor, Tensor]:
    """The k smallest of ``values`` (:func:`smallest`), of identical centres at the k-th
    those with the lowest indices.

    ``values`` (..., n): every token's distances to the n centres (up to a per-token
    constant); ``tolerance`` (..., 1): :func:`tie_tolerance`; ``keys`` (..., 1, n): a
    per-centre value that identical centres share (their squared norms). A centre ties
    with the k-th one (whichever of them topk put there) when both its distance and its
    key are within 8 ulps of the k-th's: the distance within ``tolerance``, the key within
    ``8 eps max(keys)``; i.e. it is the same centre up to rounding. The tied centres among
    the k are replaced by the tied centres of the lowest indices. Returns the k values and
    indices ordered by (value, index).

    Why: which of several tied values ``topk`` returns is up to its kernel and to all the
    other values of the row; and centres that are identical in exact arithmetic (those of
    pure padding) come out a few ulps apart, differently on each CPU (its kernels round
    differently). Deciding their ties by index, up to that rounding, takes the same centres
    everywhere. Centres that are only as near (different centres whose distances happen to
    agree to 8 ulps) keep topk's choice; a row without tied centres and without equal
    values gets ``smallest(values, k)`` bit for bit.

    Eagerly only rows whose (k+1)-th value is within the tolerance of the k-th or with equal
    values among the k are decided again (the k+1 smallest cost about what the k do);
    traced (torch.compile, torch.export / ONNX, torch.jit.trace) all rows, with static
    shapes.
    """
    n = values.shape[-1]
    best, index = smallest(values, min(k + 1, n))
    following = best[..., k:]                      # the (k+1)-th value, none when k == n
    best, index = best[..., :k].contiguous(), index[..., :k].contiguous()
    kth = best[..., -1:]
    low, high = kth - tolerance, kth + tolerance
    slack = 8 * torch.finfo(keys.dtype).eps * keys.amax(-1, keepdim=True)
    keys = keys.expand_as(values)
    key = keys.gather(-1, index[..., -1:])
    key_low, key_high = key - slack, key + slack
    if (is_compiling() or is_exporting() or torch.onnx.is_in_onnx_export()
            or torch.jit.is_tracing()):
        index = _ties_by_index(values, best, index, low, high, keys, key_low, key_high)
    else:
        rows = (following <= high).any(-1) | (best[..., 1:] == best[..., :-1]).any(-1)
        if not bool(rows.any()):
            return best, index
        bounds = [t.expand_as(kth)[rows] for t in (low, high, key_low, key_high)]
        decided = _ties_by_index(values[rows], best[rows], index[rows], bounds[0], bounds[1],
                                 keys[rows], bounds[2], bounds[3])
        index = index.index_put((rows,), decided)
    return values.gather(-1, index), index


def _ties_by_index(values: Tensor, best: Tensor, index: Tensor, low: Tensor, high: Tensor,
                   keys: Tensor, key_low: Tensor, key_high: Tensor) -> Tensor:
    """:func:`first_of_ties`' indices; ``low``/``high``, ``key_low``/``key_high`` (..., 1):
    the bounds of a tied centre's value and key."""
    k, n = best.shape[-1], values.shape[-1]
    tied = (values >= low) & (values <= high) & (keys >= key_low) & (keys <= key_high)
    # the tied centres in index order: the smallest of the keys column (tied) or
    # n + column (the others), exact integers in floating point (n < 2^24)
    columns = torch.arange(n, device=values.device, dtype=values.dtype)
    first = smallest(torch.where(tied, columns, columns + n), k)[1]          # (..., k)
    # the tied ones among the k take them in turn (none where nothing ties: NaN)
    chosen = tied.gather(-1, index)                                          # (..., k)
    turn = chosen.long().cumsum(-1) - 1
    index = torch.where(chosen, first.gather(-1, turn.clamp(min=0)), index)
    # ordered by (value, index): each slot goes after the slots of smaller keys (NaN last)
    value = values.gather(-1, index)
    value = torch.where(torch.isnan(value), torch.full_like(value, math.inf), value)
    before = (value.unsqueeze(-2) < value.unsqueeze(-1)) | (
        (value.unsqueeze(-2) == value.unsqueeze(-1)) & (index.unsqueeze(-2) < index.unsqueeze(-1)))
    return index.scatter(-1, before.sum(-1), index)


def smallest(values: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """``values.topk(k, -1, largest=False)`` (ascending), in two cheaper selections.

    The last dim (n) is cut into groups of g: the k smallest values lie in the k groups
    with the smallest minima (each of those groups holds a value no larger than the k-th
    smallest minimum, so the k-th smallest value is no larger either), so a top-k of the
    n / g group minima and one of the k * g values in the chosen groups give the same
    values and indices (up to the order of exact ties), with static shapes.
    """
    n = values.shape[-1]
    group, cost = 0, n                       # the group size with the fewest values to rank
    for g in range(2, 9):
        if n % g == 0 and n // g + k * g < cost:
            group, cost = g, n // g + k * g
    if not group:
        return values.topk(k, dim=-1, largest=False)
    minima = values.view(*values.shape[:-1], n // group, group).amin(-1)
    chosen = minima.topk(k, dim=-1, largest=False).indices                  # (..., k)
    columns = (chosen.unsqueeze(-1) * group
               + torch.arange(group, device=values.device)).flatten(-2)     # (..., k*g)
    best, position = values.gather(-1, columns).topk(k, dim=-1, largest=False)
    return best, columns.gather(-1, position)


def weighted_gather(values: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """``out[b, n] = sum_j weight[b, n, j] * values[b, index[b, n, j]]``.

    In O(N * k * C) without materialising the (B, N, k, C) gather (one ``embedding_bag``).
    While traced for export (ONNX has no ``embedding_bag`` without a loop), the weights are
    scattered into a dense (B, N, M) matrix that multiplies the values instead: the same
    sums, O(N * M) memory.

    Args:
        values: (B, M, C).
        index: (B, N, k) rows of ``values`` per output.
        weight: (B, N, k).

    Returns:
        (B, N, C).
    """
    B, M, C = values.shape
    N, k = index.shape[1:]
    weight = weight.to(values.dtype)
    if is_exporting() or torch.onnx.is_in_onnx_export():
        dense = values.new_zeros(B, N, M).scatter_add(2, index, weight)
        return torch.bmm(dense, values)
    flat = (index + torch.arange(B, device=index.device).view(B, 1, 1) * M).reshape(B * N, k)
    out = F.embedding_bag(flat, values.reshape(B * M, C), mode="sum",
                          per_sample_weights=weight.reshape(B * N, k))
    return out.view(B, N, C)
