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


def cluster_content_per_window(z, hw, K, grid, make_clustering):
    """z (B, H*W, C): no padding; every window's content (``r x c`` tokens, smaller at the
    bottom/right edges) clustered on its own to ``ceil(r kh / K) x ceil(c kw / K)`` centres
    by ``make_clustering(grid)``. Returns the map of centres (B, Hc, Wc, C) and per-window
    ``(state, centre rows, centre cols, token rows, token cols)``."""
    B, _, C = z.shape
    H, W = hw
    nh, nw = math.ceil(H / K), math.ceil(W / K)
    kh, kw = grid
    rows = [(r * K, min((r + 1) * K, H)) for r in range(nh)]
    cols = [(c * K, min((c + 1) * K, W)) for c in range(nw)]
    sizes_r = [math.ceil((r1 - r0) * kh / K) for r0, r1 in rows]
    sizes_c = [math.ceil((c1 - c0) * kw / K) for c0, c1 in cols]
    centre_map = torch.zeros(B, sum(sizes_r), sum(sizes_c), C, dtype=z.dtype)
    grid_z = z.view(B, H, W, C)
    states = {}
    for b in range(B):
        top = 0
        for r, (r0, r1) in enumerate(rows):
            left = 0
            for c, (c0, c1) in enumerate(cols):
                g = (sizes_r[r], sizes_c[c])
                window = grid_z[b, r0:r1, c0:c1].reshape(1, -1, C)
                centres, state = make_clustering(g)(window, (r1 - r0, c1 - c0))
                centre_map[b, top:top + g[0], left:left + g[1]] = centres.view(*g, C)
                states[b, r, c] = (state, (top, top + g[0]), (left, left + g[1]), (r0, r1), (c0, c1))
                left += g[1]
            top += sizes_r[r]
    return centre_map, states


def reconstruct_content_per_window(refined_map, states, hw, reconstruction):
    """Inverse of :func:`cluster_content_per_window`: every window from its own centres."""
    B, _, _, C = refined_map.shape
    H, W = hw
    out = torch.zeros(B, H, W, C, dtype=refined_map.dtype)
    for (b, _, _), (state, (t0, t1), (l0, l1), (r0, r1), (c0, c1)) in states.items():
        own = refined_map[b, t0:t1, l0:l1].reshape(1, -1, C)
        out[b, r0:r1, c0:c1] = reconstruction(own, state).view(r1 - r0, c1 - c0, C)
    return out.reshape(B, H * W, C)
