"""Window attention with another window size, for the expedited Swin-style blocks.

The clustered blocks of a Swin / SwinV2 stage attend within windows of k (the clustered
window) instead of the stock K: :func:`shifted_window_attention` is Swin's (shifted-)window
self-attention for any window size; the position-bias helpers give window k's bias from the
stock parameters (the standard Swin index, the bilinear table resize, and SwinV2's
log-spaced coordinate table of the smaller window). Pure torch.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.window import pad_to_windows, validate_clustered_window_size, window_merge, window_partition


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
def attend_windows(w_msa: nn.Module, attn: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
    """The end of a Swin-style window attention, once for Swin and SwinV2: the shift mask
    ``(nW, n, n)`` added to the scores ``attn`` ``(B*nW, heads, n, n)`` of every window,
    softmax, attention dropout, the values ``v``, the output projection and its dropout
    (``w_msa``'s own modules)."""
    B_, heads, n, _ = attn.shape
    if mask is not None:
        nW = mask.shape[0]
        attn = (attn.view(B_ // nW, nW, heads, n, n) + mask[None, :, None]).view(B_, heads, n, n)
    attn = w_msa.attn_drop(w_msa.softmax(attn))
    return w_msa.proj_drop(w_msa.proj((attn @ v).transpose(1, 2).reshape(B_, n, -1)))


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


__all__ = ["shift_attention_mask", "shifted_window_attention", "attend_windows",
           "relative_position_index",
           "resize_bias_table", "crop_coords_table"]
