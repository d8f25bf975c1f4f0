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
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .cluster import ClusterState, TokenClustering, TokenReconstruction, validate_int

# Top-k centres per reconstructed token inside a window (the paper's Swin setting: k=10 of
# the 64 centres of an 8x8 clustered window; the global DEFAULT_K=20 is for plain ViTs).
DEFAULT_WINDOW_K = 10


def validate_clustered_window_size(size: int, window_size: int,
                                   name: str = "clustered_window_size") -> int:
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
class WindowClusterState:
    """What :func:`reconstruct_windows` needs from :func:`cluster_windows`.

    inner: the clustering state of all windows folded into the batch (``B * nW`` rows of
    ``K*K`` tokens); hw: the token map before padding; window_size: K; grid: the
    ``(kh, kw)`` centres of one window; batch: B.
    """

    inner: ClusterState
    hw: Tuple[int, int]
    window_size: int
    grid: Tuple[int, int]
    batch: int

    @property
    def n_windows(self) -> Tuple[int, int]:
        return -(-self.hw[0] // self.window_size), -(-self.hw[1] // self.window_size)

    @property
    def clustered_hw(self) -> Tuple[int, int]:
        """The map of centres: ``(nH * kh, nW * kw)``."""
        return self.n_windows[0] * self.grid[0], self.n_windows[1] * self.grid[1]


def cluster_windows(clustering: TokenClustering, tokens: Tensor, hw: Tuple[int, int],
                    window_size: int) -> Tuple[Tensor, WindowClusterState]:
    """Cluster every ``window_size``-window of a token map to ``clustering.grid`` centres.

    tokens: (B, H*W, C) on the ``hw`` grid. ``clustering.grid`` is resolved against the
    ``(K, K)`` window (an int k gives k x k centres per window). Returns the centres as a
    (B, Hc*Wc, C) map with ``(Hc, Wc) = state.clustered_hw``, and the state.
    """
    B, N, C = tokens.shape
    H, W = int(hw[0]), int(hw[1])
    if H * W != N:
        raise ValueError(f"hw={hw} does not match the {N} tokens given")
    validate_int(window_size, "window_size", 1)
    padded = pad_to_windows(tokens.view(B, H, W, C), window_size)
    windows = window_partition(padded, (window_size, window_size))    # (B*nW, K*K, C)
    centers, inner = clustering(windows, (window_size, window_size))  # (B*nW, kh*kw, C)
    state = WindowClusterState(inner, (H, W), window_size, inner.grid, B)
    clustered = window_merge(centers, state.grid, B, state.n_windows)
    return clustered.reshape(B, -1, C), state


def reconstruct_windows(reconstruction: TokenReconstruction, centers: Tensor,
                        state: WindowClusterState) -> Tensor:
    """Restore the full token map from the (refined) window centres.

    centers: (B, Hc*Wc, C) on ``state.clustered_hw``. Every window's tokens are rebuilt from
    that window's own centres only; the padding is cropped. Returns (B, H*W, C).
    """
    B, M, C = centers.shape
    Hc, Wc = state.clustered_hw
    if B != state.batch or M != Hc * Wc:
        raise ValueError(f"centers of shape {tuple(centers.shape)} do not match the window "
                         f"clustering state (batch {state.batch}, map {Hc}x{Wc})")
    windows = window_partition(centers.view(B, Hc, Wc, C), state.grid)  # (B*nW, kh*kw, C)
    tokens = reconstruction(windows, state.inner)                       # (B*nW, K*K, C)
    K, (H, W) = state.window_size, state.hw
    full = window_merge(tokens, (K, K), B, state.n_windows)              # (B, Hp, Wp, C)
    return full[:, :H, :W].reshape(B, H * W, C)


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
           "pad_to_windows", "window_partition", "window_merge", "relative_position_index",
           "resize_bias_table", "crop_coords_table", "validate_clustered_window_size"]
