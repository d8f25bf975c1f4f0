"""Deliberately naive re-derivations of docs/method.md §4 (Swin) for the tests.

Python loops over windows calling the plain operators one window at a time, and a
bilinear resize written out from its definition; nothing here is shared with
expedite_mm.ops.window.
"""
import math

import torch


def cluster_per_window(z, hw, K, clustering):
    """z (B, H*W, C): zero-pad to multiples of K, cluster every K x K window on its own.

    Returns the (B, nh*kh, nw*kw, C) map of centres laid out window by window, and the
    per-window clustering states keyed by (b, window row, window column)."""
    B, _, C = z.shape
    H, W = hw
    nh, nw = math.ceil(H / K), math.ceil(W / K)
    padded = torch.zeros(B, nh * K, nw * K, C, dtype=z.dtype)
    padded[:, :H, :W] = z.view(B, H, W, C)
    kh, kw = clustering.grid
    centre_map = torch.zeros(B, nh * kh, nw * kw, C, dtype=z.dtype)
    states = {}
    for b in range(B):
        for r in range(nh):
            for c in range(nw):
                window = padded[b, r * K:(r + 1) * K, c * K:(c + 1) * K].reshape(1, K * K, C)
                centres, states[b, r, c] = clustering(window, (K, K))
                centre_map[b, r * kh:(r + 1) * kh, c * kw:(c + 1) * kw] = centres.view(kh, kw, C)
    return centre_map, states


def reconstruct_per_window(refined_map, states, hw, K, reconstruction):
    """refined_map (B, nh*kh, nw*kw, C): rebuild every window from its own centres, crop."""
    B, _, _, C = refined_map.shape
    H, W = hw
    nh, nw = math.ceil(H / K), math.ceil(W / K)
    kh, kw = refined_map.shape[1] // nh, refined_map.shape[2] // nw
    out = torch.zeros(B, nh * K, nw * K, C, dtype=refined_map.dtype)
    for (b, r, c), state in states.items():
        own = refined_map[b, r * kh:(r + 1) * kh, c * kw:(c + 1) * kw].reshape(1, kh * kw, C)
        out[b, r * K:(r + 1) * K, c * K:(c + 1) * K] = reconstruction(own, state).view(K, K, C)
    return out[:, :H, :W].reshape(B, H * W, C)


def bilinear_1d_weights(n_in, n_out):
    """(n_out, n_in) matrix of half-pixel-centred linear interpolation (align_corners=False)."""
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        weights[o, i0] += 1 - frac
        weights[o, i1] += frac
    return weights


def resize_table(table, k):
    """A ((2K-1)^2, heads) relative-position-bias table resized to ((2k-1)^2, heads)."""
    side = math.isqrt(table.shape[0])
    w = bilinear_1d_weights(side, 2 * k - 1)
    heads = [(w @ table[:, h].double().view(side, side) @ w.t()).flatten()
             for h in range(table.shape[1])]
    return torch.stack(heads, 1).to(table.dtype)
