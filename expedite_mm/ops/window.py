"""Window token clustering / reconstruction for Swin-style backbones, pure torch.

A Swin stage attends within ``K x K`` windows of its token map. Window clustering pads
the map (right/bottom, with zeros, as Swin's own attention does) to multiples of ``K``,
folds every ``K x K`` window into the batch dimension and clusters all of them in one
:class:`~expedite_mm.ops.cluster.TokenClustering` call to ``kh x kw`` centres each. The
centres are laid out as a ``(Hp/K*kh) x (Wp/K*kw)`` map, so that a window-``k`` partition
of that map gives back exactly one clustered window per original window. Reconstruction
partitions the refined map the same way, restores every window from its *own* centres
(one batched :class:`~expedite_mm.ops.cluster.TokenReconstruction` call) and crops the
padding away.

How the blocks attend within the smaller windows (shifted-window attention with window
k, the position biases) is model-side: ``expedite_mm/models/window_attention.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cluster import ClusterState, resolve_grid, validate_int

# Top-k centres per reconstructed token inside a window (the paper's Swin setting: k=10 of
# the 64 centres of an 8x8 clustered window; the global DEFAULT_K=20 is for plain ViTs).
DEFAULT_WINDOW_K = 10


def validate_clustered_window_size(size: int, window_size: int,
                                   name: str = "clustered_window_size") -> int:
    """``size`` if it is an int in [1, window_size] (the side k of a clustered window)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= window_size:
        raise ValueError(f"{name} must be an int in [1, {window_size}] (the side of the "
                         f"clustered window; the stock window size is {window_size}), "
                         f"got {size!r}")
    return size


# --------------------------------------------------------------------------- layout
def pad_to_windows(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) -> (B, Hp, Wp, C), zero-padded right/bottom to multiples of the window."""
    H, W = x.shape[1:3]
    pad_b, pad_r = -H % window_size, -W % window_size
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    return x


def window_partition(x: Tensor, window: Tuple[int, int]) -> Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nH * nW, wh * ww, C)."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, C)


def window_merge(windows: Tensor, window: Tuple[int, int], batch: int,
                 n_windows: Tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nH * nW, wh * ww, C) -> (B, nH*wh, nW*ww, C)."""
    (wh, ww), (nh, nw) = window, n_windows
    C = windows.shape[-1]
    x = windows.view(batch, nh, nw, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, nh * wh, nw * ww, C)


# --------------------------------------------------------------------------- operators
@dataclass(frozen=True)
class _WindowGroup:
    """Windows of one content shape: rows ``rows[0]:rows[1]`` x cols ``cols[0]:cols[1]`` of
    the (padded) token map, cut into ``window`` windows of ``grid`` centres each."""

    rows: Tuple[int, int]
    cols: Tuple[int, int]
    window: Tuple[int, int]
    grid: Tuple[int, int]
    inner: Optional[ClusterState] = None      # the clustering state of its windows

    @property
    def n_windows(self) -> Tuple[int, int]:
        return ((self.rows[1] - self.rows[0]) // self.window[0],
                (self.cols[1] - self.cols[0]) // self.window[1])

    @property
    def clustered_hw(self) -> Tuple[int, int]:
        return self.n_windows[0] * self.grid[0], self.n_windows[1] * self.grid[1]


def _bands(size: int, window_size: int, pad: bool) -> List[Tuple[int, int, int]]:
    """``(start, stop, window side)`` bands of one axis: whole windows, then (unpadded) the
    remainder as windows of its own size."""
    if pad:
        return [(0, -(-size // window_size) * window_size, window_size)]
    whole = size // window_size * window_size
    bands = [(0, whole, window_size)] if whole else []
    return bands + ([(whole, size, size - whole)] if size > whole else [])


def _window_grid(window: Tuple[int, int], window_size: int, grid: Tuple[int, int]):
    """Centres of a window with ``window`` content tokens: ``ceil(side * g / K)`` per side."""
    return (-(-window[0] * grid[0] // window_size), -(-window[1] * grid[1] // window_size))


def _groups(hw: Tuple[int, int], window_size: int, grid: Tuple[int, int],
            pad: bool) -> List[List[_WindowGroup]]:
    """The window groups of an ``hw`` map, as rows of the 2-D band layout."""
    rows, cols = _bands(hw[0], window_size, pad), _bands(hw[1], window_size, pad)
    return [[_WindowGroup((r0, r1), (c0, c1), (wr, wc),
                          _window_grid((wr, wc), window_size, grid))
             for c0, c1, wc in cols] for r0, r1, wr in rows]


def clustered_window_hw(hw: Tuple[int, int], window_size: int, grid: Tuple[int, int],
                        pad: bool = True) -> Tuple[int, int]:
    """The map of centres that :func:`cluster_windows` makes of an ``hw`` token map."""
    layout = _groups(hw, window_size, grid, pad)
    return (sum(row[0].clustered_hw[0] for row in layout),
            sum(group.clustered_hw[1] for group in layout[0]))


@dataclass
class WindowClusterState:
    """What :func:`reconstruct_windows` needs from :func:`cluster_windows`.

    hw: the token map; window_size: K; grid: the ``(kh, kw)`` centres of a whole window;
    batch: B; layout: the window groups (one per content shape, each with the clustering
    state of its windows folded into the batch) as rows of the band layout.
    """

    hw: Tuple[int, int]
    window_size: int
    grid: Tuple[int, int]
    batch: int
    layout: List[List[_WindowGroup]]

    @property
    def n_windows(self) -> Tuple[int, int]:
        return -(-self.hw[0] // self.window_size), -(-self.hw[1] // self.window_size)

    @property
    def clustered_hw(self) -> Tuple[int, int]:
        """The map of centres, ``(nH * kh, nW * kw)`` when the padding is clustered."""
        return (sum(row[0].clustered_hw[0] for row in self.layout),
                sum(group.clustered_hw[1] for group in self.layout[0]))


def cluster_windows(clustering: nn.Module, tokens: Tensor, hw: Tuple[int, int],
                    window_size: int, pad: bool = True) -> Tuple[Tensor, WindowClusterState]:
    """Cluster every ``window_size``-window of a token map to ``clustering.grid`` centres.

    Args:
        clustering: a :class:`~expedite_mm.ops.cluster.TokenClustering` (or a grid reducer)
            whose ``grid`` is the ``(kh, kw)`` centres of a whole ``K x K`` window.
        tokens: (B, H*W, C) on the ``hw`` grid.
        window_size: K.
        pad: ``True``: zero-pad the map to multiples of K and cluster every window, padding
            included, in one call. ``False``: cluster only content; the partial windows of
            the last row/column (``r x c`` tokens) get ``ceil(r kh / K) x ceil(c kw / K)``
            centres (one call per content shape), so the centre map stays aligned with the
            window-k partition.

    Returns:
        The centres as a (B, Hc*Wc, C) map, ``(Hc, Wc) = state.clustered_hw``, and the state.
    """
    B, N, C = tokens.shape
    H, W = int(hw[0]), int(hw[1])
    if H * W != N:
        raise ValueError(f"hw={hw} does not match the {N} tokens given")
    validate_int(window_size, "window_size", 1)
    grid = resolve_grid(clustering.grid, (window_size, window_size))
    x = tokens.view(B, H, W, C)
    if pad:
        x = pad_to_windows(x, window_size)
    layout, rows = [], []
    for groups in _groups((H, W), window_size, grid, pad):
        parts, states = [], []
        for group in groups:
            windows = window_partition(x[:, group.rows[0]:group.rows[1], group.cols[0]:group.cols[1]],
                                       group.window)                    # (B*n, wh*ww, C)
            centers, inner = clustering(windows, group.window, grid=group.grid)
            states.append(replace(group, inner=inner))
            parts.append(window_merge(centers, group.grid, B, group.n_windows))
        layout.append(states)
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    clustered = torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]
    state = WindowClusterState((H, W), window_size, grid, B, layout)
    return clustered.reshape(B, -1, C), state


def reconstruct_windows(reconstruction: nn.Module, centers: Tensor,
                        state: WindowClusterState) -> Tensor:
    """Restore the full token map from the (refined) window centres.

    Every window's tokens are rebuilt from that window's own centres only; padding is
    cropped.

    Args:
        reconstruction: a :class:`~expedite_mm.ops.cluster.TokenReconstruction` (or the
            reconstructor paired with the clustering's reducer).
        centers: (B, Hc*Wc, C) on ``state.clustered_hw``.
        state: what :func:`cluster_windows` returned.

    Returns:
        (B, H*W, C).
    """
    B, M, C = centers.shape
    Hc, Wc = state.clustered_hw
    if B != state.batch or M != Hc * Wc:
        raise ValueError(f"centers of shape {tuple(centers.shape)} do not match the window "
                         f"clustering state (batch {state.batch}, map {Hc}x{Wc})")
    x = centers.view(B, Hc, Wc, C)
    rows, top = [], 0
    for row in state.layout:
        parts, left = [], 0
        height = row[0].clustered_hw[0]
        for group in row:
            width = group.clustered_hw[1]
            windows = window_partition(x[:, top:top + height, left:left + width], group.grid)
            tokens = reconstruction(windows, group.inner)                # (B*n, wh*ww, C)
            parts.append(window_merge(tokens, group.window, B, group.n_windows))
            left += width
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
        top += height
    full = torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]
    H, W = state.hw
    return full[:, :H, :W].reshape(B, H * W, C)


__all__ = ["DEFAULT_WINDOW_K", "WindowClusterState", "cluster_windows", "reconstruct_windows",
           "clustered_window_hw", "pad_to_windows", "window_partition", "window_merge",
           "validate_clustered_window_size"]
