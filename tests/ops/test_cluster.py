"""The two operators against the naive re-derivations of docs/method.md §1-2 (tests/helpers/naive.py)."""
import math

import naive
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import expedite_mm.ops.cluster as cluster
from expedite_mm.ops import TokenClustering, TokenReconstruction, resolve_grid, weighted_gather
from expedite_mm.ops.cluster import ClusterState, _plan, first_of_ties, smallest

SHAPES = [((40, 40), (28, 28)), ((30, 40), (15, 20)), ((48, 48), (32, 32)), ((7, 9), (3, 4))]


def _rel_err(ours, ref, scale):
    return (ours.double() - ref).abs().max().item() / scale


@pytest.mark.parametrize("window", [3, 5, 7])
@pytest.mark.parametrize("hw,grid", SHAPES)
def test_clustering_matches_naive(hw, grid, window):
    z = torch.randn(2, hw[0] * hw[1], 16)
    centers, state = TokenClustering(grid, window=window, iters=5, temperature=50.0)(z, hw)
    assert centers.shape == (2, grid[0] * grid[1], 16)
    for b in range(2):
        ref = naive.cluster(z[b], hw, grid, window, iters=5, temperature=50.0)
        assert _rel_err(centers[b], ref, z.abs().max()) <= 1e-5


@pytest.mark.parametrize("hw,grid", [((24, 24), (17, 17)), ((20, 24), (14, 17)), ((7, 9), (3, 4))])
def test_gram_form_matches_naive(hw, grid):
    """Wide tokens take the EM's distances from the tiles' Gram matrices (docs/method.md
    §3.1): the same centres as the naive EM."""
    width = 256
    assert _plan(hw, grid, 5, width, 5)[1] and not _plan(hw, grid, 5, 16, 5)[1]
    z = torch.randn(2, hw[0] * hw[1], width) + 3 * torch.randn(1, 1, width)
    centers, _ = TokenClustering(grid, window=5)(z, hw)
    for b in range(2):
        ref = naive.cluster(z[b], hw, grid, 5)
        assert _rel_err(centers[b], ref, z.abs().max()) <= 1e-5


@pytest.mark.parametrize("neighbours", ["global", "local"])
@pytest.mark.parametrize("normalize", ["sum", "l2"])
@pytest.mark.parametrize("hw,grid,window", [((40, 40), (28, 28), 5), ((30, 40), (15, 20), 3),
                                            ((48, 48), (32, 32), 7), ((7, 9), (3, 4), 5)])
def test_reconstruction_matches_naive(hw, grid, window, normalize, neighbours):
    z = torch.randn(2, hw[0] * hw[1], 16)
    centers, state = TokenClustering(grid, window=window)(z, hw)
    refined = torch.tanh(centers) * 3 + 0.5          # stands in for the beta layers
    out = TokenReconstruction(k=20, normalize=normalize, neighbours=neighbours)(refined, state)
    assert out.shape == z.shape
    local = dict(hw=hw, grid=grid, window=window) if neighbours == "local" else {}
    for b in range(2):
        s_before = naive.cluster(z[b], hw, grid, window)
        ref = naive.reconstruct(z[b], s_before, refined[b], k=20, normalize=normalize, **local)
        assert _rel_err(out[b], ref, refined.abs().max()) <= 1e-5


def test_weights_follow_paper_and_released_normalisation():
    z = torch.randn(1, 100, 8)
    centers, state = TokenClustering((5, 5))(z, (10, 10))
    _, w_sum = TokenReconstruction(k=7, normalize="sum").weights(state)
    _, w_l2 = TokenReconstruction(k=7, normalize="l2").weights(state)
    torch.testing.assert_close(w_sum.sum(-1), torch.ones(1, 100))
    torch.testing.assert_close(w_l2.norm(dim=-1), torch.ones(1, 100))
    # same direction, different scale: l2 = sum * (sum of weights / their norm) >= sum
    torch.testing.assert_close(w_l2 / w_l2.norm(dim=-1, keepdim=True),
                               w_sum / w_sum.norm(dim=-1, keepdim=True))


def test_window_one_is_hard_assignment_to_home_cell():
    """lambda = 1: every token joins only its home cell (row floor(i*h/H), col floor(j*w/W)),
    so every centre is the plain mean of its home tokens, whatever the features."""
    H, W, h, w = 7, 10, 3, 4
    z = torch.randn(1, H * W, 5) * 10
    centers, _ = TokenClustering((h, w), window=1, iters=1)(z, (H, W))
    for r in range(h):
        for c in range(w):
            home = [i * W + j for i in range(H) for j in range(W) if i * h // H == r and j * w // W == c]
            torch.testing.assert_close(centers[0, r * w + c], z[0, home].mean(0))


def test_piecewise_constant_tokens_are_reconstructed():
    """Tokens taking 4 values in 4 quadrants: the centres settle on those values and
    reconstruction (with unrefined centres) gives the tokens back."""
    values = torch.randn(4, 32) * 5
    quadrant = torch.tensor([[(i >= 10) * 2 + (j >= 10) for j in range(20)] for i in range(20)])
    z = values[quadrant.flatten()][None]
    centers, state = TokenClustering((10, 10), temperature=1.0)(z, (20, 20))
    out = TokenReconstruction(k=4, temperature=1.0)(centers, state)
    torch.testing.assert_close(out, z, atol=1e-4, rtol=1e-4)


def test_grid_ratio_is_resolved_per_input():
    assert resolve_grid(0.7, (40, 40)) == (28, 28)
    assert resolve_grid(0.5, (30, 45)) == (15, 22)
    assert resolve_grid(0.01, (10, 10)) == (1, 1)
    clustering = TokenClustering(0.7)
    for hw in [(40, 40), (32, 48)]:
        z = torch.randn(2, hw[0] * hw[1], 8)
        centers, state = clustering(z, hw)
        assert state.grid == resolve_grid(0.7, hw)
        assert centers.shape[1] == state.grid[0] * state.grid[1]
        assert TokenReconstruction()(centers, state).shape == z.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_apart_features_do_not_underflow(dtype):
    """Features x100 (squared distances ~1e6, exp(-D/tau) underflows even in float64
    without the max/min shifts): no NaN, no all-zero rows, and equal to the float64
    re-derivation. fp32 distances of that size carry absolute rounding errors of ~0.1,
    i.e. ~2e-3 in the exponent, so fp32 is held to 1e-3 of the feature scale."""
    hw, grid = (40, 40), (28, 28)
    z = (torch.randn(2, 1600, 16) * 100).to(dtype)
    centers, state = TokenClustering(grid)(z, hw)
    recon = TokenReconstruction(k=20)(centers, state)
    index, weight = TokenReconstruction(k=20).weights(state)
    assert torch.isfinite(centers).all() and torch.isfinite(recon).all()
    assert (weight.sum(-1) > 0).all() and (recon.abs().sum(-1) > 0).all()
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    scale = z.abs().max()
    for b in range(2):
        ref = naive.cluster(z[b], hw, grid)
        assert _rel_err(centers[b], ref, scale) <= tol
        ref_recon = naive.reconstruct(z[b], ref, ref)
        assert _rel_err(recon[b], ref_recon, scale) <= tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    z = torch.randn(2, 1600, 32)
    centers, state = TokenClustering((28, 28))(z.to(dtype), (40, 40))
    out = TokenReconstruction()(centers, state)
    assert centers.dtype == dtype and out.dtype == dtype
    assert torch.isfinite(centers.float()).all() and torch.isfinite(out.float()).all()
    assert state.tokens.dtype == torch.float32          # computed in fp32 inside
    ref_centers, _ = TokenClustering((28, 28))(z.to(dtype).float(), (40, 40))
    torch.testing.assert_close(centers.float(), ref_centers.to(dtype).float())


def test_fp32_inside_autocast():
    z = torch.randn(1, 400, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        centers, state = TokenClustering((10, 10))(z, (20, 20))
        out = TokenReconstruction()(centers, state)
    ref_centers, ref_state = TokenClustering((10, 10))(z, (20, 20))
    assert centers.dtype == torch.float32 and out.dtype == torch.float32
    torch.testing.assert_close(centers, ref_centers)
    torch.testing.assert_close(out, TokenReconstruction()(ref_centers, ref_state))


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns, and the largest without a
    dimension of size ``width`` (not tokens or centres)."""

    def __init__(self, width=None):
        super().__init__()
        self.largest = self.largest_other = 0
        self.width = width

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
                if self.width not in t.shape:
                    self.largest_other = max(self.largest_other, t.numel())
        return out


def test_em_never_allocates_dense_distances():
    B, (H, W), (h, w), C = 1, (80, 80), (56, 56), 64
    N, M = H * W, h * w
    z = torch.randn(B, N, C)
    clustering = TokenClustering((h, w), window=5)
    clustering(z, (H, W))                        # index tables are built (and cached) here
    with _LargestTensor() as probe:
        clustering(z, (H, W))
    dense = B * N * M
    assert probe.largest < dense / 4, (probe.largest, dense)
    # the per-iteration work is O(N * lambda * C): bounded by a small multiple of it
    assert probe.largest <= 4 * N * 25 * C


def test_gram_form_never_allocates_more_than_the_tiles():
    B, (H, W), (h, w), C = 1, (64, 64), (45, 45), 512
    N, M = H * W, h * w
    assert _plan((H, W), (h, w), 5, C, 5)[1]
    z = torch.randn(B, N, C)
    clustering = TokenClustering((h, w), window=5)
    clustering(z, (H, W))
    with _LargestTensor(C) as probe:
        clustering(z, (H, W))
    assert probe.largest <= 25 * N * C        # the tiles: at most lambda copies of the tokens
    # the Gram matrices (no larger than the tiles) and the assignments: no N x M matrix
    assert probe.largest_other <= probe.largest
    assert probe.largest_other < B * N * M / 3, (probe.largest_other, B * N * M)


def test_operators_hold_no_weights():
    for module in (TokenClustering((4, 4)), TokenReconstruction()):
        assert list(module.parameters()) == [] and list(module.buffers()) == []
        assert module.state_dict() == {}


def test_gradients_match_finite_differences():
    z = torch.randn(1, 6 * 7, 3, dtype=torch.float64, requires_grad=True)
    refined = torch.randn(1, 3 * 4, 3, dtype=torch.float64, requires_grad=True)

    def run(z, refined, neighbours):
        centers, state = TokenClustering((3, 4), window=3, iters=2, temperature=2.0)(z, (6, 7))
        out = TokenReconstruction(k=5, temperature=2.0, neighbours=neighbours)(refined, state)
        return centers, out

    for neighbours in ("global", "local"):
        assert torch.autograd.gradcheck(lambda a, b: run(a, b, neighbours), (z, refined))


def test_gram_form_gradients_match_finite_differences():
    width = 20                                           # wide enough for the Gram form
    assert _plan((4, 5), (2, 3), 3, width, 5)[1]
    z = torch.randn(1, 4 * 5, width, dtype=torch.float64, requires_grad=True)
    clustering = TokenClustering((2, 3), window=3, iters=5, temperature=20.0)
    assert torch.autograd.gradcheck(lambda a: clustering(a, (4, 5))[0], (z,))


@pytest.mark.parametrize("neighbours", ["global", "local"])
def test_inference_mode_forward_then_autograd_on_the_same_shapes(neighbours):
    """The index tables are cached per shape: a first forward under inference_mode must not
    leave inference tensors in the cache that a later autograd forward cannot save."""
    hw, grid = (11, 13), (5, 6) if neighbours == "global" else (6, 5)   # shapes no other test uses
    clustering = TokenClustering(grid, window=3, iters=2)
    reconstruction = TokenReconstruction(k=4, neighbours=neighbours)
    z = torch.randn(2, hw[0] * hw[1], 8)
    with torch.inference_mode():
        reference = reconstruction(*clustering(z, hw))
    z.requires_grad_(True)
    out = reconstruction(*clustering(z, hw))
    out.square().sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), reference)
    with torch.no_grad():
        torch.testing.assert_close(reconstruction(*clustering(z, hw)), reference)


@pytest.mark.parametrize("n,k", [(784, 20), (1156, 20), (2025, 20), (30, 4), (7, 3), (12, 12)])
def test_two_stage_smallest_is_topk(n, k):
    """The kNN selection (group minima, then the chosen groups) returns exactly what a
    plain top-k of the smallest values returns, values and indices, in ascending order."""
    values = torch.randn(2, 50, n)
    best, index = smallest(values, k)
    ref_best, ref_index = values.topk(k, dim=-1, largest=False)
    assert torch.equal(best, ref_best) and torch.equal(index, ref_index)
    # adversarial: the k smallest values all sit in one group's neighbourhood
    values[:, :, : min(n, 8)] -= 100
    best, index = smallest(values, k)
    assert torch.equal(index, values.topk(k, dim=-1, largest=False).indices)


def _copies_state(dtype, group, M, seed):
    """Tokens and centres of which those at ``group`` are one vector up to a few ulps of
    rounding (as pure-padding centres are); the others are distinct. Returns the state and
    every token's true squared distance to every centre (the copies: to the vector itself),
    in float64."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, 9, 4, generator=generator, dtype=torch.float64)
    centers = torch.randn(2, M, 4, generator=generator, dtype=torch.float64)
    base = centers.clone()
    # the copies at about the distance of the k-th centre, so that they straddle it
    base[:, group] = centers[:, :1] * 0.1 + 0.6
    eps = torch.finfo(dtype).eps
    ulps = torch.randint(-2, 3, (2, len(group), 1), generator=generator).to(torch.float64)
    centers = base.clone()
    centers[:, group] = base[:, group] * (1 + ulps * eps)
    true = (tokens.unsqueeze(2) - base.unsqueeze(1)).pow(2).sum(-1)          # (2, 9, M)
    state = ClusterState(tokens.to(dtype), centers.to(dtype), (3, 3), (M, 1), 3)
    return state, true


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tied_centres_are_taken_lowest_index_first(dtype, monkeypatch):
    """reconstruct_ties='exact': of centres that are one vector up to rounding and tie at
    the k-th distance, the lowest indices are taken, whatever the order topk leaves them in
    (it differs between CPUs) -- checked against the true distances, with the copies
    interchangeable and ranked by index, for the centres in two orders."""
    M, k = 14, 6
    group = [2, 5, 6, 9, 11, 13]
    state, true = _copies_state(dtype, group, M, seed=3)
    straddled = 0
    for order in (torch.arange(M), torch.randperm(M, generator=torch.Generator().manual_seed(1))):
        permuted = ClusterState(state.tokens, state.centers[:, order], state.hw, state.grid,
                                state.window)
        distance = true[..., order]
        copies = [int(j) for j in torch.nonzero(torch.isin(order, torch.tensor(group))).flatten()]
        for traced in (False, True):
            with monkeypatch.context() as patch:
                if traced:                    # the static form that compile / export trace
                    patch.setattr(cluster, "is_compiling", lambda: True)
                index, _ = TokenReconstruction(k=k, ties="exact").weights(permuted)
            for b in range(2):
                for p in range(9):
                    ranked = sorted(range(M), key=lambda j: (distance[b, p, j].item(), j))
                    expected = sorted(ranked[:k])
                    assert sorted(index[b, p].tolist()) == expected, (b, p, order.tolist())
                    taken = len(set(expected) & set(copies))
                    straddled += 0 < taken < len(copies)
    assert straddled > 0                      # the copies did tie at the k-th for some tokens


def test_ties_without_tied_centres_keep_the_nearest():
    """Only the same centre up to rounding ties: two different centres whose distances
    agree to within the tolerance keep topk's choice, and without such values the result is
    topk's, bit for bit."""
    values = torch.tensor([[[3.0, 1.0 + 1e-7, 2.0, 1.0, 5.0]]])
    keys = torch.tensor([[[1.0, 7.0, 2.0, 4.0, 3.0]]])                  # all different
    best, index = first_of_ties(values, 1, torch.full((1, 1, 1), 1e-5), keys)
    assert index.tolist() == [[[3]]]          # the nearer of the two, not the lower index
    same = keys.clone()
    same[..., 1] = same[..., 3]                                           # one centre twice
    best, index = first_of_ties(values, 1, torch.full((1, 1, 1), 1e-5), same)
    assert index.tolist() == [[[1]]]          # tied: the lower index
    values = torch.randn(2, 40, 196)
    best, index = first_of_ties(values, 20, torch.full((2, 40, 1), 1e-6), torch.randn(2, 1, 196))
    reference = values.topk(20, dim=-1, largest=False)
    assert torch.equal(best, reference.values) and torch.equal(index, reference.indices)


def test_weighted_gather_matches_loop():
    values = torch.randn(2, 9, 4)
    index = torch.randint(0, 9, (2, 5, 3))
    weight = torch.rand(2, 5, 3)
    out = weighted_gather(values, index, weight)
    for b in range(2):
        for n in range(5):
            ref = sum(weight[b, n, j] * values[b, index[b, n, j]] for j in range(3))
            torch.testing.assert_close(out[b, n], ref)


@pytest.mark.parametrize("kwargs,name", [
    (dict(grid=0), "grid"), (dict(grid=(4, 0)), "grid"), (dict(grid=1.5), "grid"),
    (dict(grid=(4, 4, 4)), "grid"), (dict(grid=(4, 4), window=4), "window"),
    (dict(grid=(4, 4), window=0), "window"), (dict(grid=(4, 4), iters=0), "iters"),
    (dict(grid=(4, 4), temperature=0.0), "temperature"),
    (dict(grid=(4, 4), temperature=math.inf), "temperature"),
])
def test_clustering_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TokenClustering(**kwargs)


@pytest.mark.parametrize("kwargs,name", [
    (dict(k=0), "k"), (dict(temperature=-1.0), "temperature"),
    (dict(normalize="l1"), "normalize"), (dict(neighbours="all"), "neighbours"),
])
def test_reconstruction_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TokenReconstruction(**kwargs)


def test_clustering_rejects_mismatched_input():
    with pytest.raises(ValueError, match="hw"):
        TokenClustering((4, 4))(torch.randn(1, 50, 3), (7, 7))
    with pytest.raises(ValueError, match="larger than the token grid"):
        TokenClustering((8, 8))(torch.randn(1, 49, 3), (7, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    z = torch.randn(2, 1600, 64)
    centers, state = TokenClustering((28, 28))(z, (40, 40))
    out = TokenReconstruction()(centers * 2, state)
    with torch.autocast("cuda", dtype=torch.float16):
        centers_cuda, state_cuda = TokenClustering((28, 28))(z.cuda().half(), (40, 40))
        out_cuda = TokenReconstruction()(centers_cuda * 2, state_cuda)
    assert centers_cuda.dtype == torch.float16
    torch.testing.assert_close(centers_cuda.float().cpu(), centers, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out_cuda.float().cpu(), out, atol=4e-2, rtol=2e-2)


def test_ops_package_is_pure_torch():
    """expedite_mm/ops imports nothing from OpenMMLab (usable and testable on its own)."""
    import ast
    import pathlib

    import expedite_mm.ops as ops_package
    for path in pathlib.Path(ops_package.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not any(n.split(".")[0] in {"mmcv", "mmengine", "mmseg", "mmdet", "mmpretrain"}
                           for n in names), (path.name, names)
