"""ExpeditedSwin in the release-compatible mode of the Mask2Former configs against
Expedit-Mask2Former's computation, written out here from its description (docs/method.md
§4.2): the stock layers of the same model, naive float64 per-window clustering, clustered
blocks that roll by k // 2 but mask with the stage's own shift K // 2, and a per-window
L2-normalised top-k reconstruction that keeps every centre tied with the k-th."""
import math

import naive
import naive_window
import pytest
import torch
from swin_reference import build_pair, window_k_block

K, k = 6, 4                     # the tiny Swin's window, and the clustered window
SETTINGS = dict(cluster_after=2, clustered_window_size=k, cluster_window=3, cluster_iters=5,
                temperature=20.0, reconstruct_k=10, reconstruct_normalize="l2")
RELEASE = dict(attention_mask_shift="stock", reconstruct_ties="keep")


class NaiveClustering:
    """One window at a time, float64, with the state the naive reconstruction needs."""

    grid = (k, k)

    def __call__(self, window, hw):
        centres = naive.cluster(window[0], hw, self.grid, window=3, iters=5, temperature=20.0)
        return centres[None].to(window.dtype), (window[0], centres)


def naive_reconstruction(own, state):
    tokens, centres = state
    return naive.reconstruct(tokens, centres, own[0], k=10, temperature=20.0, normalize="l2",
                             ties="keep")[None].to(own.dtype)


def release_mask(padded_hw, window, shift):
    """Swin's region mask built from slices of ``window`` and ``shift`` (the release passes
    the stage's shift K // 2 while the clustered blocks use window k)."""
    labels = torch.zeros(*padded_hw)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for rows in slices:
        for cols in slices:
            labels[rows, cols] = count
            count += 1
    Hp, Wp = padded_hw
    windows = labels.view(Hp // window, window, Wp // window, window).permute(0, 2, 1, 3)
    windows = windows.reshape(-1, window * window)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, -100.0)


def release_block(block, x, hw):
    """A clustered block as the release runs it: a stock window-k block's layers, the map
    rolled by k // 2, the mask of shift K // 2."""
    small = window_k_block("mmdet", block, k)
    shift = small.attn.shift_size
    B, _, C = x.shape
    H, W = hw
    identity = x
    y = small.norm1(x).view(B, H, W, C)
    Hp, Wp = math.ceil(H / k) * k, math.ceil(W / k) * k
    y = torch.nn.functional.pad(y, (0, 0, 0, Wp - W, 0, Hp - H))
    mask = None
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))
        mask = release_mask((Hp, Wp), k, K // 2).to(x.dtype)
    windows = y.view(B, Hp // k, k, Wp // k, k, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, k * k, C)
    out = small.attn.w_msa(windows, mask=mask)
    out = out.view(B, Hp // k, Wp // k, k, k, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = identity + out[:, :H, :W].reshape(B, H * W, C)
    return small.ffn(small.norm2(x), identity=x)


def release_reference(stock, x, cluster_after):
    """The whole backbone, stage 3 as the release computes it."""
    x, hw = stock.patch_embed(x)
    outs = []
    for i, stage in enumerate(stock.stages):
        if i != 2:
            x, hw, out, out_hw = stage(x, hw)
        else:
            states = None
            for number, block in enumerate(stage.blocks, start=1):
                x = block(x, hw) if states is None else release_block(block, x, small_hw)
                if number == cluster_after:
                    centre_map, states = naive_window.cluster_per_window(x, hw, K, NaiveClustering())
                    x, small_hw = centre_map.flatten(1, 2), tuple(centre_map.shape[1:3])
            x = naive_window.reconstruct_per_window(x.view(x.shape[0], *small_hw, -1), states, hw,
                                                    K, naive_reconstruction)
            out, out_hw = x, hw
            x, hw = stage.downsample(x, hw)
        if i in stock.out_indices:
            out = getattr(stock, f"norm{i}")(out)
            outs.append(out.view(-1, *out_hw, out.shape[-1]).permute(0, 3, 1, 2))
    return outs


@pytest.mark.parametrize("shape", [(1, 3, 208, 272),    # stage-3 map 13x17: padded windows
                                   (2, 3, 192, 192)])   # 12x12: no padding
def test_release_mode_equals_the_release_computation(shape):
    stock, ours = build_pair("mmdet", torch.float64, **SETTINGS, **RELEASE)
    _, default = build_pair("mmdet", torch.float64, **SETTINGS)
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        expected = release_reference(stock, x, SETTINGS["cluster_after"])
        got, standard = ours(x), default(x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # the default (mask of the roll, exactly k) is a different computation
    assert (standard[2] - expected[2]).abs().max() > 1e-3


def test_padding_centres_tie_and_keep_widens_the_top_k():
    """On a padded map, the pure-padding centres of a window are identical, so the
    release's ``>=`` selection keeps more than k of them for some tokens."""
    torch.manual_seed(0)
    window = torch.zeros(1, K * K, 8, dtype=torch.float64)
    window[0, :K] = torch.randn(K, 8, dtype=torch.float64)          # one row of content
    tokens, centres = NaiveClustering()(window, (K, K))[1]
    d = naive.sqdist(tokens, centres)
    kth = d.sort(1).values[:, 9:10]
    assert ((d <= kth).sum(1) > 10).any()
