"""HybridViT / ExpeditedHybridViT (DPT's R50+ViT backbone) and DPTDepthHead."""

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()  # registers the DPT modules
from expedite_mm.models.dpt.bit_resnet import BiTResNet
from expedite_mm.ops import TokenClustering, TokenReconstruction
from expedite_mm.apis.config import flatten_outputs
from harness import assert_stock_fallback_once

# ResNet (1, 2, 1) blocks of 16/32/64 channels, a 32-wide 4-layer ViT tapped at layers 3, 4.
RESNET = dict(resnet_depths=(1, 2, 1), resnet_channels=(16, 32, 64), resnet_stem_channels=8,
              resnet_num_groups=4)
VIT = dict(embed_dims=32, num_layers=4, num_heads=2, mlp_ratio=2, out_indices=(2, 3),
           final_norm=False, with_cls_token=True, output_cls_token=True,
           norm_cfg=dict(type="LN", eps=1e-6))
SMALL = dict(img_size=64, **RESNET, **VIT)          # position grid 4 x 4


def build(type_, **kwargs):
    model = MODELS.build(dict(type=type_, **SMALL, **kwargs))
    model.eval()             # (mmseg's VisionTransformer.train returns None: no chaining)
    return model


def build_pair(**expedite):
    stock, ours = build("HybridViT"), build("ExpeditedHybridViT", **expedite)
    ours.load_state_dict(stock.state_dict())
    return stock, ours


def test_stock_is_the_resnet_then_mmseg_vit_on_its_features():
    """HybridViT == BiTResNet followed by mmseg's own VisionTransformer (1x1 patches)."""
    stock = build("HybridViT")
    resnet = BiTResNet((1, 2, 1), (16, 32, 64), 8, 4).eval()
    vit = VisionTransformer(img_size=4, patch_size=1, in_channels=64, patch_bias=True,
                            interpolate_mode="bilinear", **VIT)
    vit.eval()
    resnet.load_state_dict({k[len("resnet."):]: v for k, v in stock.state_dict().items()
                            if k.startswith("resnet.")})
    vit.load_state_dict({k: v for k, v in stock.state_dict().items()
                         if not k.startswith("resnet.")})
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        stages = resnet(x)
        expected = [stages[0], stages[1], *vit(stages[-1])]
        assert all(torch.equal(a, b) for a, b in zip(flatten_outputs(stock(x)), flatten_outputs(expected), strict=True))


@pytest.mark.parametrize("shape", [(1, 3, 352, 1216), (2, 3, 480, 640), (2, 3, 75, 101)])
def test_disabled_is_bit_identical(shape):
    stock, ours = build_pair()
    assert not ours.expedited
    x = torch.randn(*shape)
    with torch.no_grad():
        for a, b in zip(flatten_outputs(stock(x)), flatten_outputs(ours(x)), strict=True):
            assert torch.equal(a, b)


def test_state_dict_keys_equal_stock():
    stock, ours = build_pair(cluster_after=1, cluster_grid=(4, 4))
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    assert list(ours.state_dict()) == list(stock.state_dict())


def reference(stock, x, cluster_after, reconstruct_after, clustering, reconstruction):
    """docs/method.md §4 on the hybrid: the ResNet taps untouched; the ViT clustered after
    layer alpha, reconstructed after alpha+beta, taps inside the span reconstructed."""
    stages = stock.resnet(x)
    tokens, (H, W) = stock.patch_embed(stages[-1])
    B = x.shape[0]
    z = torch.cat([stock.cls_token.expand(B, -1, -1), tokens], 1)
    z = stock._pos_embeding(z, (H, W), stock.pos_embed)
    outs, state = [stages[0], stages[1]], None
    for number, layer in enumerate(stock.layers, 1):
        z = layer(z)
        if number == reconstruct_after:
            z = torch.cat([z[:, :1], reconstruction(z[:, 1:], state)], 1)
            state = None
        if number - 1 in stock.out_indices:
            full = z if state is None else torch.cat([z[:, :1], reconstruction(z[:, 1:], state)], 1)
            outs.append([full[:, 1:].transpose(1, 2).reshape(B, -1, H, W), full[:, 0]])
        if number == cluster_after:
            centers, state = clustering(z[:, 1:], (H, W))
            z = torch.cat([z[:, :1], centers], 1)
    return outs


@pytest.mark.parametrize("cluster_after,reconstruct_after,grid", [
    (1, 4, (12, 40)),      # KITTI-like aspect; the tap at layer 3 is inside the span
    (2, 3, (16, 16)),      # reconstruction before the last tap
])
def test_matches_spec_reference_on_kitti_size(cluster_after, reconstruct_after, grid):
    stock, ours = build_pair(cluster_after=cluster_after, reconstruct_after=reconstruct_after,
                             cluster_grid=grid, reconstruct_k=8, temperature=1.0,
                             reconstruct_normalize="l2")
    x = torch.randn(1, 3, 352, 1216)                       # 22 x 76 tokens
    with torch.no_grad():
        ref = reference(stock, x, cluster_after, reconstruct_after,
                        TokenClustering(grid, temperature=1.0),
                        TokenReconstruction(k=8, temperature=1.0, normalize="l2"))
        outs = ours(x)
    shapes = [(1, 16, 88, 304), (1, 32, 44, 152), (1, 32, 22, 76), (1, 32, 22, 76)]
    assert [tuple(o.shape) if torch.is_tensor(o) else tuple(o[0].shape) for o in outs] == shapes
    for a, b in zip(flatten_outputs(outs), flatten_outputs(ref), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        stock_outs = stock(x)
    assert torch.equal(outs[0], stock_outs[0]) and torch.equal(outs[1], stock_outs[1])
    assert not torch.allclose(outs[3][0], stock_outs[3][0], atol=1e-3)   # expediting acts


@pytest.mark.parametrize("shape,tokens", [((2, 3, 480, 640), (30, 40)), ((1, 3, 75, 101), (5, 7))])
def test_expedited_shapes(shape, tokens):
    _, ours = build_pair(cluster_after=1, cluster_grid=0.7)
    with torch.no_grad():
        outs = ours(torch.randn(*shape))
    B, _, H, W = shape
    ceil = lambda a, b: -(-a // b)                          # noqa: E731  (SAME padding)
    assert outs[0].shape == (B, 16, ceil(H, 4), ceil(W, 4))
    assert outs[1].shape == (B, 32, ceil(ceil(H, 4), 2), ceil(ceil(W, 4), 2))
    for feature, cls in outs[2:]:
        assert feature.shape == (B, 32, *tokens) and cls.shape == (B, 32)


def test_small_input_falls_back_with_one_warning():
    stock, ours = build_pair(cluster_after=1, cluster_grid=(16, 16))
    x = torch.randn(1, 3, 128, 128)                         # 8 x 8 tokens < 16 x 16
    assert_stock_fallback_once(stock, ours, x)


@pytest.mark.parametrize("kwargs,name", [
    (dict(patch_size=16), "patch_size"),
    (dict(resnet_out_indices=(0, 3)), "resnet_out_indices"),
    (dict(resnet_depths=(1, 1)), "depths"),
    (dict(cluster_after=4), "cluster_after"),
    (dict(cluster_after=1, reconstruct_after=1), "reconstruct_after"),
    (dict(cluster_after=1, cluster_grid=(0, 4)), "cluster_grid"),
    (dict(cluster_after=1, temperature=-1.0), "temperature"),
])
def test_bad_arguments_raise_at_build(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MODELS.build(dict(type="ExpeditedHybridViT", **{**SMALL, **kwargs}))


HEAD = dict(type="DPTDepthHead", in_channels=(16, 32, 32, 32), channels=16,
            post_process_channels=(16, 32, 32, 32), reassemble_factors=(None, None, 1, 0.5),
            head_channels=8, invert=True, depth_scale=0.01, depth_shift=0.1)


@pytest.mark.parametrize("kwargs,name", [
    (dict(post_process_channels=(16, 32, 32)), "post_process_channels"),
    (dict(reassemble_factors=(None, None, 3, 0.5)), "reassemble_factors"),
    (dict(post_process_channels=(8, 32, 32, 32)), "post_process_channels"),
    (dict(readout_type="concat"), "readout_type"),
    (dict(channels=1), "channels"),
])
def test_head_bad_arguments_raise_at_build(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MODELS.build({**HEAD, **kwargs})


def _estimator(**expedite):
    init_default_scope("mmseg")
    return MODELS.build(dict(
        type="DepthEstimator",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3),
        backbone=dict(type="ExpeditedHybridViT", **SMALL, **expedite),
        decode_head=HEAD, test_cfg=ConfigDict(mode="whole")))


def test_depth_estimator_predicts_odd_sizes_and_trains():
    """Inputs that are not multiples of 32: the fusion resizes to the finer tap; the
    prediction comes back at the original size, positive (inverse depth inverted)."""
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData

    model = _estimator(cluster_after=1, cluster_grid=(4, 5))
    model.eval()
    x = torch.rand(2, 3, 75, 101) * 255
    meta = dict(ori_shape=(75, 101), img_shape=(75, 101), pad_shape=(75, 101))
    samples = [SegDataSample(metainfo=meta) for _ in range(2)]
    with torch.no_grad():
        preds = model.predict(x, samples)
    for sample in preds:
        depth = sample.pred_depth_map.data
        assert depth.shape == (1, 75, 101) and bool((depth > 0).all())
    model.train()
    for sample in samples:
        sample.gt_depth_map = PixelData(data=torch.rand(1, 75, 101) * 5 + 0.5)
    losses = model.loss(x, samples)
    assert torch.isfinite(losses["decode.loss_silog"])
    losses["decode.loss_silog"].backward()
    assert model.backbone.layers[0].attn.attn.in_proj_weight.grad is not None


def test_ade20k_dpt_config_multi_tap():
    """Our expedited config of mmseg's DPT ViT-B (ADE20K, taps after layers 3, 6, 9, 12,
    cluster after 3): at 512x512 every tap is full resolution; the first (before the span)
    equals the stock one, the two inside the span and the last are reconstructed."""
    import os.path as osp

    from mmengine.config import Config

    from harness import ROOT as root
    cfg = Config.fromfile(osp.join(root, "configs/dpt/dpt_vit-b16_expedite-a3-24x24_ade20k-512x512.py"))
    backbone = {**cfg.model.backbone, "embed_dims": 32, "num_heads": 2}
    ours = MODELS.build(backbone)
    stock = MODELS.build({k: v for k, v in backbone.items() if k not in (
        "cluster_after", "reconstruct_after", "cluster_grid")} | {"type": "VisionTransformer"})
    ours.load_state_dict(stock.state_dict())
    ours.eval()
    stock.eval()
    assert list(ours.out_indices) == [2, 5, 8, 11] and ours.cluster_after == 3
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        fast, slow = ours(x), stock(x)
    for (a, a_cls), (b, b_cls) in zip(fast, slow, strict=True):
        assert a.shape == b.shape == (1, 32, 32, 32) and a_cls.shape == (1, 32)
    assert torch.equal(fast[0][0], slow[0][0])
    for (a, _), (b, _) in zip(fast[1:], slow[1:]):
        assert not torch.allclose(a, b, atol=1e-3)
