"""Window clustering / reconstruction (docs/method.md §4.2) against per-window loops."""
import math

import naive
import naive_window
import pytest
import torch

from expedite_mm.ops import TokenClustering, TokenReconstruction
from expedite_mm.models.window_attention import relative_position_index, resize_bias_table
from expedite_mm.ops.window import cluster_windows, reconstruct_windows


def per_window_reference(z, hw, K, clustering, reconstruction, refine):
    """The method (docs/method.md §4) written out with Python loops over windows (tests/helpers/naive_window.py): cluster each
    zero-padded K x K window on its own, refine the map of centres, rebuild every window
    from its own centres, crop the padding."""
    centre_map, states = naive_window.cluster_per_window(z, hw, K, clustering)
    out = naive_window.reconstruct_per_window(refine(centre_map), states, hw, K, reconstruction)
    return centre_map.reshape(z.shape[0], -1, z.shape[2]), out


def refine(centre_map):
    """Stands in for the blocks run on the clustered map: a fixed nonlinear map that also
    mixes neighbouring windows (so a window mix-up in the layout would show)."""
    return torch.tanh(centre_map) + 0.3 * centre_map.roll(1, dims=1)


@pytest.mark.parametrize("hw,K,k,window,normalize,neighbours", [
    ((24, 24), 12, 8, 7, "l2", "global"),     # the paper's Mask2Former setting, exact fit
    ((17, 30), 12, 8, 5, "sum", "global"),    # not a multiple of the window either way
    ((9, 7), 6, 4, 3, "sum", "local"),        # smaller than... a few windows, local kNN
    ((5, 13), 7, 7, 5, "l2", "global"),       # k == K
])
def test_window_path_matches_per_window_loop(hw, K, k, window, normalize, neighbours):
    B, C = 2, 16
    # float64: the two paths batch the same matmuls differently, and fp32 rounding through
    # exp(-D / tau) reaches ~4e-5 on these features; layout mistakes would be O(1).
    z = torch.randn(B, hw[0] * hw[1], C, dtype=torch.float64) * 3
    clustering = TokenClustering((k, k), window=window, temperature=20.0)
    reconstruction = TokenReconstruction(k=10, temperature=20.0, normalize=normalize,
                                         neighbours=neighbours)
    ref_centres, ref_out = per_window_reference(z, hw, K, clustering, reconstruction, refine)

    centres, state = cluster_windows(clustering, z, hw, K)
    nh, nw = math.ceil(hw[0] / K), math.ceil(hw[1] / K)
    assert state.clustered_hw == (nh * k, nw * k)
    assert centres.shape == (B, nh * k * nw * k, C)
    torch.testing.assert_close(centres, ref_centres, atol=1e-5, rtol=1e-5)
    refined = refine(centres.view(B, nh * k, nw * k, C)).reshape(B, -1, C)
    out = reconstruct_windows(reconstruction, refined, state)
    assert out.shape == z.shape
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw,K,k,window", [
    ((17, 30), 12, 8, 5),     # partial windows at the bottom, the right and the corner
    ((40, 40), 12, 8, 7),     # Mask2Former's 640 ADE20K stage-3 map: 4 content rows left
    ((9, 7), 6, 4, 3),
    ((24, 24), 12, 8, 3),     # no partial window: the same as padding
])
def test_content_only_clustering_matches_per_window_loop(hw, K, k, window):
    """``pad=False``: each window's content alone, ``ceil(r k / K) x ceil(c k / K)`` centres."""
    B, C = 2, 16
    z = torch.randn(B, hw[0] * hw[1], C, dtype=torch.float64) * 3
    make = lambda grid: TokenClustering(grid, window=window, temperature=20.0)  # noqa: E731
    reconstruction = TokenReconstruction(k=10, temperature=20.0, normalize="l2")
    ref_map, states = naive_window.cluster_content_per_window(z, hw, K, (k, k), make)
    ref_out = naive_window.reconstruct_content_per_window(refine(ref_map), states, hw,
                                                          reconstruction)
    centres, state = cluster_windows(make((k, k)), z, hw, K, pad=False)
    assert state.clustered_hw == tuple(ref_map.shape[1:3])
    torch.testing.assert_close(centres, ref_map.reshape(B, -1, C), atol=1e-5, rtol=1e-5)
    refined = refine(centres.view(B, *state.clustered_hw, C)).reshape(B, -1, C)
    out = reconstruct_windows(reconstruction, refined, state)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    if hw[0] % K or hw[1] % K:
        padded = cluster_windows(make((k, k)), z, hw, K)[1].clustered_hw
        assert state.clustered_hw[0] * state.clustered_hw[1] < padded[0] * padded[1]


def test_one_window_matches_the_spec_rederivation():
    """Ties the window path to tests/helpers/naive.py (float64, dense masks), not only to the op."""
    K, k, C = 12, 8, 8
    z = torch.randn(1, 20 * 15, C)
    clustering = TokenClustering((k, k), window=7, temperature=20.0)
    centres, _ = cluster_windows(clustering, z, (20, 15), K)
    padded = torch.zeros(24, 24, C)
    padded[:20, :15] = z.view(20, 15, C)
    last_window = padded[12:, 12:].reshape(K * K, C)             # bottom-right, mostly padding
    expected = naive.cluster(last_window, (K, K), (k, k), window=7, temperature=20.0)
    got = centres.view(16, 16, C)[8:, 8:].reshape(k * k, C)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_all_windows_are_clustered_in_one_call():
    clustering = TokenClustering((4, 4), window=3)
    calls = []
    clustering.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    cluster_windows(clustering, torch.randn(2, 20 * 26, 8), (20, 26), 6)
    assert calls == [torch.Size([2 * 4 * 5, 36, 8])]


def test_windows_do_not_leak_into_each_other():
    """Reconstruction of a window only reads that window's centres."""
    K, k, hw, C = 6, 3, (12, 18), 4
    z = torch.randn(1, hw[0] * hw[1], C)
    clustering, reconstruction = TokenClustering((k, k), window=3), TokenReconstruction(k=9)
    centres, state = cluster_windows(clustering, z, hw, K)
    poked = centres.view(1, 6, 9, C).clone()
    poked[0, 3:, 6:] += 100.0                                   # the bottom-right window
    base = reconstruct_windows(reconstruction, centres, state).view(12, 18, C)
    out = reconstruct_windows(reconstruction, poked.view(1, -1, C), state).view(12, 18, C)
    changed = (out - base).abs().amax(-1) > 1e-3
    expected = torch.zeros(12, 18, dtype=torch.bool)
    expected[6:, 12:] = True
    assert torch.equal(changed, expected)


def test_mismatched_inputs_raise():
    clustering = TokenClustering((4, 4))
    with pytest.raises(ValueError, match="hw"):
        cluster_windows(clustering, torch.randn(1, 50, 4), (7, 8), 6)
    centres, state = cluster_windows(clustering, torch.randn(1, 56, 4), (7, 8), 6)
    with pytest.raises(ValueError, match="do not match"):
        reconstruct_windows(TokenReconstruction(), centres[:, :-1], state)


@pytest.mark.parametrize("K", [1, 3, 7, 12])
def test_relative_position_index_is_swins(K):
    index = relative_position_index(K)
    expected = torch.empty(K * K, K * K, dtype=torch.long)
    for p in range(K * K):
        for q in range(K * K):
            (i1, j1), (i2, j2) = divmod(p, K), divmod(q, K)
            expected[p, q] = (i1 - i2 + K - 1) * (2 * K - 1) + (j1 - j2 + K - 1)
    assert torch.equal(index, expected)


def test_bias_table_resize_is_bilinear():
    K, k, heads = 12, 8, 3
    table = torch.randn((2 * K - 1) ** 2, heads)
    resized = resize_bias_table(table, k)
    assert resized.shape == ((2 * k - 1) ** 2, heads)
    w = naive_window.bilinear_1d_weights(2 * K - 1, 2 * k - 1)
    for h in range(heads):
        image = table[:, h].double().view(2 * K - 1, 2 * K - 1)
        expected = (w @ image @ w.t()).flatten()
        torch.testing.assert_close(resized[:, h].double(), expected, atol=1e-5, rtol=1e-5)


def test_bias_table_resize_identity_and_validation():
    table = torch.randn(13 * 13, 2)
    assert resize_bias_table(table, 7) is table
    with pytest.raises(ValueError, match="table"):
        resize_bias_table(torch.randn(12 * 12, 2), 4)
