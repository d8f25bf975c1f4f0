"""Deliberately naive re-derivations of docs/method.md §1-2, for the tests.

Dense N x M masks and explicit loops over the equations, float64 throughout; nothing
here is shared with expedite_mm.ops.
"""
import functools
import math

import torch


def adaptive_avg_pool(z, hw, grid):
    """z (N, C) on an H x W grid -> (M, C), torch's adaptive pooling regions."""
    (H, W), (h, w) = hw, grid
    grid_z = z.reshape(H, W, -1)
    out = []
    for r in range(h):
        r0, r1 = (r * H) // h, math.ceil((r + 1) * H / h)
        for c in range(w):
            c0, c1 = (c * W) // w, math.ceil((c + 1) * W / w)
            out.append(grid_z[r0:r1, c0:c1].reshape(-1, z.shape[1]).mean(0))
    return torch.stack(out)


@functools.lru_cache(maxsize=None)
def candidate_mask(hw, grid, window):
    """(N, M) bool: cell i is among token p's window x window cells around its home."""
    (H, W), (h, w) = hw, grid
    radius = window // 2
    mask = torch.zeros(H * W, h * w, dtype=torch.bool)
    for i in range(H):
        for j in range(W):
            home_r, home_c = i * h // H, j * w // W
            for r in range(home_r - radius, home_r + radius + 1):
                for c in range(home_c - radius, home_c + radius + 1):
                    if 0 <= r < h and 0 <= c < w:
                        mask[i * W + j, r * w + c] = True
    return mask


def sqdist(z, s):
    return ((z[:, None, :] - s[None, :, :]) ** 2).sum(-1)


def cluster(z, hw, grid, window=5, iters=5, temperature=50.0):
    """One image: z (N, C) -> centres (M, C), float64."""
    z = z.double()
    mask = candidate_mask(hw, grid, window)
    s = adaptive_avg_pool(z, hw, grid)
    for _ in range(iters):
        logits = (-sqdist(z, s) / temperature).masked_fill(~mask, -math.inf)
        log_q = torch.log_softmax(logits, dim=1)                 # over a token's candidates
        # S_i = sum_p Q[p,i] z_p / sum_p Q[p,i], normalised in log space per centre
        col = torch.softmax(log_q.masked_fill(~mask, -math.inf), dim=0)
        s = col.t() @ z
    return s


def reconstruct(z, s_before, s_after, k=20, temperature=50.0, normalize="sum",
                hw=None, grid=None, window=None, ties="exact"):
    """One image: every token from its k nearest (or local candidate) centres; with
    ``ties='keep'`` also every centre exactly as near as the k-th."""
    z, s_before, s_after = z.double(), s_before.double(), s_after.double()
    d = sqdist(z, s_before)
    out = torch.empty(z.shape[0], s_after.shape[1], dtype=torch.float64)
    mask = candidate_mask(hw, grid, window) if window is not None else None
    for p in range(z.shape[0]):
        if mask is None:
            order = torch.argsort(d[p])[: min(k, s_before.shape[0])]
            if ties == "keep":
                order = torch.nonzero(d[p] <= d[p, order[-1]]).flatten()
        else:
            order = torch.nonzero(mask[p]).flatten()
        dp = d[p, order]
        weight = torch.exp(-(dp - dp.min()) / temperature)
        weight = weight / (weight.sum() if normalize == "sum" else weight.norm())
        out[p] = (weight[:, None] * s_after[order]).sum(0)
    return out
