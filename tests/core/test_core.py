"""The expedite loop, the argument families and the fallback warning (expedite_mm/core),
on toy layers and operators whose every step can be written out by hand."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from expedite_mm.core import args as core_args
from expedite_mm.core.hourglass import GridTokens, run_hourglass, warn_fallback


class Halve(nn.Module):
    """A 'clustering' that averages pairs of tokens along the width: H x W -> H x W/2."""
    grid = (2, 2)
    needs = ()

    def forward(self, tokens, hw):
        B, N, C = tokens.shape
        pairs = tokens.view(B, hw[0], hw[1] // 2, 2, C)
        state = type("State", (), {"hw": hw, "grid": (hw[0], hw[1] // 2)})()
        return pairs.mean(3).flatten(1, 2), state


class Double(nn.Module):
    """Its 'reconstruction': every centre back to both of its tokens."""

    def forward(self, centers, state):
        return centers.repeat_interleave(2, dim=1)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Identity() for _ in range(5)])
        self.clustering, self.reconstruction = Halve(), Double()


class ToyTokens(GridTokens):
    """A class token first; every layer adds 1 (10 to the class token); outputs are the
    patch tokens as they are."""
    extra_tokens = 1

    def layer(self, index, layer, x, state):
        return x + torch.tensor([10.0] + [1.0] * (x.shape[1] - 1))[:, None]

    def output(self, x, hw):
        return x[:, 1:, 0].clone()

    def output_on_centres(self, x, state):
        return ("centres", x[:, 1:, 0].clone())


def expected_outputs(tokens, cluster_after, reconstruct_after, out_indices):
    """The rule of docs/method.md §4 written out for the toy: before alpha dense; at or
    after alpha (taken before clustering at alpha itself) the tokens reconstructed from the
    current centres; after reconstruction dense again; without reconstruction, the centres."""
    x, outs, centres = tokens.clone(), [], None
    if cluster_after == 0:
        centres = x.view(1, 2, 2, 2, -1).mean(3).flatten(1, 2)
    for number in range(1, 6):
        if centres is None:
            x = x + 1
        else:
            centres = centres + 1
        if number == reconstruct_after:
            x, centres = centres.repeat_interleave(2, dim=1), None
        if number - 1 in out_indices:
            if centres is None:
                outs.append(x[..., 0])
            elif reconstruct_after is None:
                outs.append(("centres", centres[..., 0]))
            else:
                outs.append(centres.repeat_interleave(2, dim=1)[..., 0])
        if number == cluster_after:
            centres = x.view(1, 2, 2, 2, -1).mean(3).flatten(1, 2)
    return outs


@pytest.mark.parametrize("cluster_after,reconstruct_after", [(2, 4), (0, 5), (1, None), (3, 5)])
def test_the_loop_serves_every_output_by_the_rule(cluster_after, reconstruct_after):
    torch.manual_seed(0)
    patches = torch.randn(1, 8, 3)                       # a 2 x 4 grid of 3-channel tokens
    x = torch.cat([torch.zeros(1, 1, 3), patches], 1)    # class token first
    outs, state, last = run_hourglass(ToyTokens(Toy()), x, (2, 4), cluster_after,
                                      reconstruct_after, out_indices=range(5), origin=True)
    expected = expected_outputs(patches, cluster_after, reconstruct_after, range(5))
    assert torch.equal(outs[0], patches[..., 0])          # origin: the embedding
    assert len(outs) == 6
    for got, want in zip(outs[1:], expected):
        if isinstance(want, tuple):
            assert got[0] == "centres" and torch.allclose(got[1], want[1])
        else:
            assert torch.allclose(got, want)
    assert (state is None) == (reconstruct_after is not None)
    assert torch.equal(last[:, 0], torch.full((1, 3), 50.0))   # the class token: 5 x 10


# --------------------------------------------------------------------------- arguments
def test_families_compose_their_parts():
    shared = set(core_args.ExpediteArgs.keys())
    assert shared >= {"cluster_after", "reconstruct_after", "temperature", "reducer"}
    assert not shared & {"cluster_grid", "stage", "reconstruct", "clustered_window_size"}
    assert set(core_args.DENSE_VIT.names()) == shared | {"cluster_grid", "reconstruct_placement"}
    assert set(core_args.WINDOWED_STAGE.names()) == shared | {
        "clustered_window_size", "cluster_padding", "stage", "attention_mask_shift"}
    assert set(core_args.WINDOWED_VIT.names()) == shared | {"clustered_window_size",
                                                             "cluster_padding"}
    assert set(core_args.GRID_STAGE.names()) == shared | {"cluster_grid", "stage"}
    args = core_args.CLASSIFICATION_VIT.parse(dict(cluster_after=np.int64(3),
                                                   cluster_grid=[4, 5]))
    assert args.cluster_after == 3 and type(args.cluster_after) is int
    assert args.grid.cluster_grid == (4, 5) and args.temperature == 1.0
    assert args.placement is None and args.windows is None and args.classification.reconstruct is False
    window = core_args.WINDOWED_STAGE.parse({})
    assert (window.reconstruct_k, window.stages.stage, window.windows.cluster_padding) == (10, 2, True)


@pytest.mark.parametrize("family,key,where", [
    (core_args.DENSE_VIT, "stage", "hierarchical backbones"),
    (core_args.GRID_STAGE, "attention_mask_shift", "hierarchical windowed backbones"),
    (core_args.GRID_STAGE, "clustered_window_size", "windowed backbones"),
    (core_args.DENSE_VIT, "reconstruct", "classification backbones"),
    (core_args.WINDOWED_STAGE, "cluster_grid", "plain ViT backbones"),
    (core_args.WINDOWED_VIT, "attention_mask_shift", "hierarchical windowed backbones"),
    (core_args.CLASSIFICATION_VIT, "reconstruct_placement", "segmentation ViTs"),
])
def test_another_familys_key_says_where_it_belongs(family, key, where):
    with pytest.raises(ValueError, match=f"{key} is not an argument of this backbone: it is "
                                         f"for {where}"):
        family.pop_from({key: 1, "cluster_after": 1})


def test_pop_from_takes_only_expedite_keys():
    kwargs = dict(embed_dims=8, cluster_after=2, cluster_grid=0.5)
    args = core_args.DENSE_VIT.pop_from(kwargs)
    assert kwargs == dict(embed_dims=8) and args.grid.cluster_grid == 0.5


# --------------------------------------------------------------------------- fallback
def test_fallback_warns_once_per_model_and_writes_nothing_on_it():
    first, second = nn.Linear(1, 1), nn.Linear(1, 1)
    before = dict(vars(first))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for model in (first, first, second, first):
            warn_fallback(model, (3, 4), "5x5 centres, not fewer tokens")
    assert [str(w.message).split(":")[0] for w in caught] == ["Linear", "Linear"]
    assert str(caught[0].message) == ("Linear: clustering the token grid (3, 4) would give 5x5 "
                                      "centres, not fewer tokens; running the stock "
                                      "(unexpedited) forward for such inputs")
    assert dict(vars(first)) == before


def test_constant_tables_are_marked_as_torch_compiler_marks_them():
    """The EM's index tables are constants of the graph (``_layout``, ``_plan``): marked
    the way ``torch.compiler.assume_constant_result`` marks a function (which would import
    torch._dynamo with the operators, see expedite_mm/ops/cluster.py)."""
    from expedite_mm.ops import cluster
    from expedite_mm.compat import FULLGRAPH_COMPILE
    if not FULLGRAPH_COMPILE:   # torch < 2.3 compiles around them with graph breaks
        assert not any(name.startswith("_dynamo") for fn in (cluster._layout, cluster._plan)
                       for name in vars(fn))
        return

    def probe():
        return 1
    marked = torch.compiler.assume_constant_result(probe)
    flags = {name for name in vars(marked) if name.startswith("_dynamo")}
    assert flags == {"_dynamo_marked_constant"}
    for fn in (cluster._layout, cluster._plan):
        assert {name: getattr(fn, name) for name in flags} == {n: getattr(marked, n) for n in flags}
