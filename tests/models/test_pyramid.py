"""The pyramid transformers against their stock classes (docs/method.md §4.8): SegFormer's
MiT (mmseg ``MixVisionTransformer``), PVT and PVTv2 (mmdet ``PyramidVisionTransformer``,
``...V2``), Twins (mmseg ``PCPVT``, ``SVT``). Disabled is the stock backbone bit for bit, the expedited stage is the method
written out, and a centre map too small for the stage's spatial reduction falls back to
stock."""
import importlib

import pytest
import torch
from mmdet.models.backbones.pvt import AbsolutePositionEmbedding
from torch import nn

import expedite_mm

expedite_mm.register_all_modules()
from expedite_mm.ops import TokenClustering, TokenReconstruction
from harness import assert_stock_fallback_once

# stage 2 has 4 blocks everywhere; sr_ratios (8, 4, 2, 1)
SMALL = dict(embed_dims=16, num_layers=[1, 1, 4, 1], num_heads=[1, 2, 2, 4],
             out_indices=(0, 1, 2, 3))
TWINS = dict(embed_dims=[16, 32, 32, 64], num_heads=[1, 2, 2, 4], depths=[1, 1, 4, 1],
             mlp_ratios=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3))
# name: (registry, stock type, expedited type, stock arguments)
BACKBONES = {
    "mit": ("mmseg", "MixVisionTransformer", "ExpeditedMiT", SMALL),
    # PVT v1: an absolute position embedding before each stage's blocks, no stage norm
    "pvt": ("mmdet", "PyramidVisionTransformer", "ExpeditedPVT",
            dict(SMALL, pretrain_img_size=128, mlp_ratios=[2, 2, 2, 2])),
    "pvtv2": ("mmdet", "PyramidVisionTransformerV2", "ExpeditedPVTv2",
              dict(SMALL, mlp_ratios=[2, 2, 2, 2])),
    # Twins: a conditional position encoding after each stage's first block; SVT's stage
    # alternates window attention (windows of 4) and global sub-sampled attention
    "pcpvt": ("mmseg", "PCPVT", "ExpeditedPCPVT", TWINS),
    "svt": ("mmseg", "SVT", "ExpeditedSVT", dict(TWINS, windiow_sizes=[4, 4, 4, 4],
                                                 norm_after_stage=True)),
}


def build_pair(name, **expedite):
    """The stock backbone and the expedited one with the same (random) weights, in eval
    mode."""
    package, stock_type, ours_type, arguments = BACKBONES[name]
    registry = importlib.import_module(f"{package}.registry").MODELS
    torch.manual_seed(0)
    stock = registry.build(dict(type=stock_type, **arguments))
    ours = registry.build(dict(type=ours_type, **arguments, **expedite))
    stock.eval()
    ours.eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    return stock, ours


def stages(stock):
    """Per stage of a stock backbone: (patch embedding, dropout after it, its steps, the
    step after its first block, its norm)."""
    if hasattr(stock, "patch_embeds"):                                     # Twins
        for i in range(len(stock.depths)):
            yield (stock.patch_embeds[i], stock.position_encoding_drops[i], stock.layers[i],
                   stock.position_encodings[i],
                   stock.norm_list[i] if stock.norm_after_stage else nn.Identity())
    else:                                                                  # MiT, PVT
        for patch_embed, steps, norm in stock.layers:
            yield patch_embed, nn.Identity(), steps, None, norm


def reference(stock, x, stage, cluster_after, reconstruct_after, clustering, reconstruction):
    """The method written out for one pyramid stage: a position embedding (PVT) on every
    token, the stage's blocks 1..alpha on the token map, clustering to the h x w centres,
    blocks alpha+1..alpha+beta on the centres as an h x w map (Twins' position encoding
    after the first block on whichever map that block ran), reconstruction (after the
    stage's norm when alpha+beta = depth), the rest on the full map; the other stages
    stock."""
    outs = []
    for index, (patch_embed, drop, steps, after_first, norm) in enumerate(stages(stock)):
        x, hw = patch_embed(x)
        x = drop(x)
        blocks = list(steps)
        if isinstance(blocks[0], AbsolutePositionEmbedding):
            x = blocks.pop(0)(x, hw)
        state, grid = None, hw
        for number, block in enumerate(blocks, start=1):
            if index == stage and number - 1 == cluster_after:
                x, state = clustering(x, hw)
                grid = clustering.grid
            x = block(x, grid)
            if number == 1 and after_first is not None:
                x = after_first(x, grid)
            if number == len(blocks):
                x = norm(x)
            if state is not None and number == reconstruct_after:
                x, state, grid = reconstruction(x, state), None, hw
        B, _, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, *hw)
        outs.append(x)
    return outs


@pytest.mark.parametrize("name", BACKBONES)
def test_disabled_is_bit_identical_with_the_stock_state_dict_keys(name):
    stock, ours = build_pair(name)
    assert not ours.expedited and ours.expedite_depth == 4
    x = torch.randn(2, 3, 97, 131)                                 # odd, non-square, batched
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)
    _, expedited = build_pair(name, cluster_after=1)
    assert list(expedited.state_dict()) == list(stock.state_dict())
    assert {k: v.shape for k, v in expedited.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("cluster_after,reconstruct_after", [
    (1, None),   # the default: reconstructed after the stage's last block and its norm
    (1, 3),      # reconstructed before the stage's last block
    (0, 2),      # clustered right after the stage's patch embedding
])
def test_matches_the_method_written_out(name, cluster_after, reconstruct_after):
    stock, ours = build_pair(name, cluster_after=cluster_after,
                             reconstruct_after=reconstruct_after, cluster_grid=(7, 9),
                             cluster_window=3, reconstruct_k=6)
    x = torch.randn(2, 3, 176, 208)                       # stage 2: an 11 x 13 token map
    clustering = TokenClustering((7, 9), window=3)
    reconstruction = TokenReconstruction(k=6)
    with torch.no_grad():
        ref = reference(stock, x, 2, cluster_after, reconstruct_after or 4, clustering,
                        reconstruction)
        outs = ours(x)
        plain = stock(x)
    assert [o.shape for o in outs] == [o.shape for o in plain]
    assert outs[2].shape[2:] == (11, 13)
    for a, b in zip(outs, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # stages before the expedited one are stock bit for bit; the rest really changed
    assert torch.equal(outs[0], plain[0]) and torch.equal(outs[1], plain[1])
    assert not torch.allclose(outs[2], plain[2], atol=1e-3)


def test_another_stage_and_a_ratio_grid():
    stock, ours = build_pair("mit", stage=1, cluster_after=0, cluster_grid=0.5)
    x = torch.randn(1, 3, 128, 96)                        # stage 1: a 16 x 12 token map
    with torch.no_grad():
        ref = reference(stock, x, 1, 0, 1, TokenClustering((8, 6)), TokenReconstruction())
        outs = ours(x)
    assert torch.equal(outs[0], stock(x)[0])
    for a, b in zip(outs, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_map_too_small_for_the_spatial_reduction_falls_back_with_one_warning():
    # 40 x 40 pixels: stage 2 has 3 x 3 tokens, clustered to 2 x 2 (fewer tokens, enough
    # for its 2 x 2 spatial reduction); 32 x 32: 2 x 2 tokens -> 1 x 1 centre, which it
    # cannot reduce: the stock forward, one warning per model
    stock, ours = build_pair("mit", cluster_after=1)
    with torch.no_grad():
        assert not torch.allclose(ours(torch.ones(1, 3, 40, 40))[3],
                                  stock(torch.ones(1, 3, 40, 40))[3])
    assert_stock_fallback_once(stock, ours, torch.randn(1, 3, 32, 32),
                               "1x1 centres, a map the attention's 2x2 spatial reduction")


@pytest.mark.parametrize("name", BACKBONES)
def test_gradients_reach_every_weight_through_the_clustered_blocks(name):
    _, ours = build_pair(name, cluster_after=1)
    ours.train()
    sum(o.square().mean() for o in ours(torch.randn(2, 3, 96, 112))).backward()
    stage = ours.stage_steps(2)
    for parameter_name, parameter in stage.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


def test_pvt_counts_blocks_not_its_position_embedding():
    _, ours = build_pair("pvt", cluster_after=3)
    assert isinstance(ours.layers[2][1][0], AbsolutePositionEmbedding)
    assert len(ours.layers[2][1]) == 5 and ours.expedite_depth == 4
    with pytest.raises(ValueError, match=r"cluster_after must be an int in \[0, 3\]"):
        build_pair("pvt", cluster_after=4)
