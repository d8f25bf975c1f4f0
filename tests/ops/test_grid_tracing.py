"""A ratio cluster grid (e.g. the default 0.7) under torch.jit.trace, as fvcore traces it.

While tracing, sizes read from ``tensor.shape`` are 0-dim tensors: the grid must resolve
to the same python ints as in eager mode, and the traced backbone must compute what the
eager one does.
"""
import warnings
from fractions import Fraction

import pytest
import torch
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedViT
from expedite_mm.ops import can_cluster, resolve_grid


def nearest_half_even(value: Fraction) -> int:
    """Round a rational to the nearest int, halves to the even neighbour (python round)."""
    floor = value.numerator // value.denominator
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.35, 1.0, 0.01])
def test_ratio_grid_resolves_identically_for_traced_sizes(ratio):
    for height in range(1, 65):
        width = 67 - height
        expected = tuple(max(1, nearest_half_even(Fraction(n * ratio)))  # float64 product
                         for n in (height, width))
        assert resolve_grid(ratio, (height, width)) == expected
        traced = (torch.tensor(height), torch.tensor(width))
        assert resolve_grid(ratio, traced) == expected
        assert all(type(side) is int for side in resolve_grid(ratio, traced))
        assert can_cluster(ratio, traced) == can_cluster(ratio, (height, width))
    assert resolve_grid(0.5, (torch.tensor(45), torch.tensor(5))) == (22, 2)   # halves to even


def test_jit_trace_of_vit_with_ratio_grid_matches_eager():
    vit = MODELS.build(dict(type="ExpeditedViT", img_size=(224, 224), patch_size=16,
                            embed_dims=32, num_layers=4, num_heads=2, mlp_ratio=2,
                            cluster_after=2, reconstruct_after=4, cluster_grid=0.7))
    vit.eval()                                   # (mmseg's ViT.train returns None)
    x = torch.randn(1, 3, 160, 208)                         # 10 x 13 tokens -> 7 x 9 centres
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(vit, x, check_trace=False)
        eager = vit(x)
        again = traced(x)
    assert len(eager) == len(again) > 0
    for a, b in zip(eager, again):
        assert a.shape == (1, 32, 10, 13)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
