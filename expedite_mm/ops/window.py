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

Also here: the relative-position-bias helpers the expedited Swin blocks need to attend
within the smaller window (the standard Swin index, the bilinear table resize, and
SwinV2's log-spaced coordinate table of the smaller window).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

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
@dataclass
class _WindowGroup:
    """Windows of one content shape: rows ``rows[0]:rows[1]`` x cols ``cols[0]:cols[1]`` of
    the (padded) token map, cut into ``window`` windows of ``grid`` centres each."""

    rows: Tuple[int, int]
    cols: Tuple[int, int]
    window: Tuple[int, int]
    grid: Tuple[int, int]
    inner: ClusterState = None

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
    layout = _groups((H, W), window_size, grid, pad)
    rows = []
    for row in layout:
        parts = []
        for group in row:
            windows = window_partition(x[:, group.rows[0]:group.rows[1], group.cols[0]:group.cols[1]],
                                       group.window)                    # (B*n, wh*ww, C)
            centers, group.inner = clustering(windows, group.window, grid=group.grid)
            parts.append(window_merge(centers, group.grid, B, group.n_windows))
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


# --------------------------------------------------------------------------- attention
def shift_attention_mask(padded_hw: Tuple[int, int], window_size: int, shift_size: int,
                         device=None) -> Optional[Tensor]:
    """Swin's shifted-window mask: (nW, n, n) with 0 within a region, -100 across regions.

    After the map is rolled by ``-shift_size``, a window at the bottom/right edge holds
    tokens from up to three regions per axis (``[0, -K)``, ``[-K, -shift)``,
    ``[-shift, end)``), which must not attend to each other. ``None`` when not shifted.
    """
    if shift_size <= 0:
        return None
    H, W = padded_hw

    def regions(size: int) -> Tensor:
        label = torch.zeros(size, dtype=torch.long, device=device)
        label[size - window_size:] = 1
        label[size - shift_size:] = 2
        return label

    label = (regions(H)[:, None] * 3 + regions(W)[None, :])[None, :, :, None]
    windows = window_partition(label, (window_size, window_size)).squeeze(-1)   # (nW, n)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill_(different, -100.0)


def shifted_window_attention(x: Tensor, hw: Tuple[int, int], window_size: int,
                             shift_size: int, attend: Callable[[Tensor, Optional[Tensor]], Tensor],
                             mask_shift: Optional[int] = None) -> Tensor:
    """Swin's (shifted-)window self-attention of a token map, for any window size.

    The map is zero-padded to multiples of the window, rolled by ``-shift_size``, cut
    into windows, attended within each (``attend(windows (B*nW, n, C), mask)``, ``mask``
    (nW, n, n) or ``None``), put back, rolled back and cropped -- what the stock Swin
    attention does with its own window size. ``mask_shift`` builds the mask for another
    shift than the roll (default: the same).

    Args:
        x: (B, H*W, C) (already normed, as the stock attention receives it).
        hw: (H, W).

    Returns:
        (B, H*W, C), before the attention's drop path.
    """
    B, N, C = x.shape
    H, W = hw
    padded = pad_to_windows(x.view(B, H, W, C), window_size)
    Hp, Wp = padded.shape[1:3]
    if shift_size > 0:
        padded = torch.roll(padded, shifts=(-shift_size, -shift_size), dims=(1, 2))
    mask_shift = shift_size if mask_shift is None else mask_shift
    mask = shift_attention_mask((Hp, Wp), window_size, mask_shift if shift_size > 0 else 0,
                                device=x.device)
    windows = window_partition(padded, (window_size, window_size))
    out = attend(windows, mask)
    out = window_merge(out, (window_size, window_size), B, (Hp // window_size, Wp // window_size))
    if shift_size > 0:
        out = torch.roll(out, shifts=(shift_size, shift_size), dims=(1, 2))
    return out[:, :H, :W].reshape(B, H * W, C)


# --------------------------------------------------------------------------- position bias
def relative_position_index(window_size: int, device=None) -> Tensor:
    """Swin's (K*K, K*K) index into a ((2K-1)**2, heads) relative-position-bias table.

    Tokens p = (i1, j1), q = (i2, j2) of a K x K window look up row
    ``(i1 - i2 + K - 1) * (2K - 1) + (j1 - j2 + K - 1)``.
    """
    coords = torch.arange(window_size, device=device)
    rows = coords.repeat_interleave(window_size)
    cols = coords.repeat(window_size)
    d_row = rows[:, None] - rows[None, :] + window_size - 1
    d_col = cols[:, None] - cols[None, :] + window_size - 1
    return d_row * (2 * window_size - 1) + d_col


def resize_bias_table(table: Tensor, window_size: int) -> Tensor:
    """Bilinearly resize a ((2K-1)**2, heads) bias table to ((2k-1)**2, heads).

    The table is read as a (2K-1) x (2K-1) image per head and resized with
    ``F.interpolate(mode="bilinear", align_corners=False)``; ``k == K`` returns it as is.
    """
    length, heads = int(table.shape[0]), int(table.shape[1])
    side = math.isqrt(length)
    if side * side != length or side % 2 == 0:
        raise ValueError(f"a relative-position-bias table of {length} rows is not "
                         f"(2K-1)**2 for an int K")
    new_side = 2 * window_size - 1
    if new_side == side:
        return table
    image = table.t().reshape(1, heads, side, side)
    resized = F.interpolate(image, size=(new_side, new_side), mode="bilinear",
                            align_corners=False)
    return resized.reshape(heads, new_side * new_side).t().contiguous()


def crop_coords_table(table: Tensor, window_size: int) -> Tensor:
    """SwinV2's continuous-position-bias input for a k x k window, from the K x K one.

    table: (1, 2K-1, 2K-1, 2), row ``(dy + K-1, dx + K-1)`` holding ``f(dy), f(dx)`` with
    ``f(d) = sign(t) * log2(1 + |t|) / log2(8)``, ``t = 8 * d / (P - 1)`` for the pretrained
    window P (the window K itself when none was set). Every entry depends on its offset
    alone, so window k's table -- offsets in [-(k-1), k-1], normalised by the same P -- is
    the centre of window K's: returns that (1, 2k-1, 2k-1, 2) view (k == K: the table).
    """
    if table.dim() != 4 or table.shape[1] != table.shape[2] or table.shape[3] != 2 \
            or table.shape[1] % 2 == 0:
        raise ValueError(f"a SwinV2 relative-coordinates table is (1, 2K-1, 2K-1, 2) for an "
                         f"int K, got {tuple(table.shape)}")
    K = (table.shape[1] + 1) // 2
    validate_clustered_window_size(window_size, K, "window_size")
    lo, hi = K - window_size, K + window_size - 1
    return table[:, lo:hi, lo:hi]


__all__ = ["DEFAULT_WINDOW_K", "WindowClusterState", "cluster_windows", "reconstruct_windows",
           "clustered_window_hw", "shift_attention_mask", "shifted_window_attention",
           "pad_to_windows", "window_partition", "window_merge", "relative_position_index",
           "resize_bias_table", "crop_coords_table", "validate_clustered_window_size"]
