"""ExpeditedViT against mmseg's VisionTransformer (docs/method.md §4.1)."""

import pytest
import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedViT
from expedite_mm.ops import TokenClustering, TokenReconstruction
from harness import assert_stock_fallback_once

SMALL = dict(img_size=(224, 224), patch_size=16, embed_dims=32, num_layers=6, num_heads=2,
             mlp_ratio=2, final_norm=True, norm_cfg=dict(type="LN", eps=1e-6))


def build_pair(**expedite):
    """A stock ViT and an ExpeditedViT with the same (random) weights, in eval mode."""
    stock = VisionTransformer(**{**SMALL, **{k: v for k, v in expedite.items() if k in STOCK_KEYS}})
    ours = MODELS.build(dict(type="ExpeditedViT", **SMALL, **expedite))
    ours.load_state_dict(stock.state_dict())
    stock.eval()
    ours.eval()
    return stock, ours


STOCK_KEYS = {"out_indices", "with_cls_token", "output_cls_token", "final_norm", "pre_norm",
              "out_origin"}


def reference(stock, x, cluster_after, reconstruct_after, clustering, reconstruction):
    """docs/method.md §4 written out: layers 1..alpha full, clustering, layers alpha+1..alpha+beta
    on centres (+ class token), reconstruction (after the final norm when alpha+beta = depth),
    every output at full resolution, outputs inside the span reconstructed."""
    tokens, (H, W) = stock.patch_embed(x)
    B = x.shape[0]
    x = torch.cat([stock.cls_token.expand(B, -1, -1), tokens], 1)
    x = stock._pos_embeding(x, (H, W), stock.pos_embed)
    if not stock.with_cls_token:
        x = x[:, 1:]
    cls_len = 1 if stock.with_cls_token else 0
    depth, outs, state = len(stock.layers), [], None
    if cluster_after == 0:
        centers, state = clustering(x[:, cls_len:], (H, W))
        x = torch.cat([x[:, :cls_len], centers], 1)
    for number in range(1, depth + 1):
        x = stock.layers[number - 1](x)
        if number == depth and stock.final_norm:
            x = stock.norm1(x)
        if number == reconstruct_after:
            x = torch.cat([x[:, :cls_len], reconstruction(x[:, cls_len:], state)], 1)
            state = None
        if number - 1 in stock.out_indices:
            full = x if state is None else torch.cat(
                [x[:, :cls_len], reconstruction(x[:, cls_len:], state)], 1)
            outs.append(full[:, cls_len:].transpose(1, 2).reshape(B, -1, H, W))
        if number == cluster_after:
            centers, state = clustering(x[:, cls_len:], (H, W))
            x = torch.cat([x[:, :cls_len], centers], 1)
    return outs


@pytest.mark.parametrize("out_indices", [(1, 3, 5), 5])
def test_disabled_is_bit_identical(out_indices):
    stock, ours = build_pair(out_indices=out_indices)
    x = torch.randn(2, 3, 480, 640)
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)


def test_state_dict_keys_equal_stock():
    stock, ours = build_pair(cluster_after=2, cluster_grid=(8, 8))
    assert list(ours.state_dict().keys()) == list(stock.state_dict().keys())
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}


@pytest.mark.parametrize("cluster_after,reconstruct_after,out_indices", [
    (2, 6, (1, 3, 5)),       # taps before, inside and at the end of the span
    (2, 4, (0, 2, 3, 4, 5)),  # reconstruction before the last layers
    (0, 3, (0, 5)),           # clustering right after the embedding
])
def test_matches_spec_reference(cluster_after, reconstruct_after, out_indices):
    stock, ours = build_pair(out_indices=out_indices, cluster_after=cluster_after,
                             reconstruct_after=reconstruct_after, cluster_grid=(21, 28),
                             cluster_window=5, reconstruct_k=8)
    x = torch.randn(2, 3, 480, 640)                               # 30 x 40 tokens
    clustering = TokenClustering((21, 28), window=5)
    reconstruction = TokenReconstruction(k=8)
    with torch.no_grad():
        ref = reference(stock, x, cluster_after, reconstruct_after, clustering, reconstruction)
        outs = ours(x)
    assert len(outs) == len(ref)
    for a, b in zip(outs, ref):
        assert a.shape == (2, 32, 30, 40)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and expediting really changed something
    with torch.no_grad():
        assert not torch.allclose(outs[-1], stock(x)[-1], atol=1e-3)


def test_class_token_variants():
    x = torch.randn(2, 3, 224, 288)
    for flags in (dict(with_cls_token=False), dict(output_cls_token=True)):
        stock, ours = build_pair(out_indices=(2, 5), cluster_after=1, cluster_grid=(10, 12), **flags)
        with torch.no_grad():
            ref = reference(stock, x, 1, 6, TokenClustering((10, 12)), TokenReconstruction())
            outs = ours(x)
        for a, b in zip(outs, ref):
            if flags.get("output_cls_token"):
                a, cls = a
                assert cls.shape == (2, 32)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_ratio_grid_any_input_size():
    _, ours = build_pair(out_indices=(5,), cluster_after=2, cluster_grid=0.7)
    for shape in [(1, 3, 640, 640), (2, 3, 352, 1216), (1, 3, 200, 296)]:
        with torch.no_grad():
            (out,) = ours(torch.randn(*shape))
        assert out.shape == (shape[0], 32, -(-shape[2] // 16), -(-shape[3] // 16))


def test_small_input_falls_back_with_one_warning():
    stock, ours = build_pair(out_indices=(5,), cluster_after=2, cluster_grid=(28, 28))
    x = torch.randn(1, 3, 224, 224)                              # 14 x 14 tokens < 28 x 28
    assert_stock_fallback_once(stock, ours, x)


@pytest.mark.parametrize("kwargs,name", [
    (dict(cluster_after=6), "cluster_after"), (dict(cluster_after=-1), "cluster_after"),
    (dict(cluster_after=2.0), "cluster_after"),
    (dict(cluster_after=3, reconstruct_after=3), "reconstruct_after"),
    (dict(cluster_after=3, reconstruct_after=7), "reconstruct_after"),
    (dict(reconstruct_after=4), "reconstruct_after"),
    (dict(cluster_after=2, cluster_grid=0), "cluster_grid"),
    (dict(cluster_after=2, cluster_grid=2.0), "cluster_grid"),
    (dict(cluster_after=2, cluster_window=4), "cluster_window"),
    (dict(cluster_after=2, cluster_iters=0), "cluster_iters"),
    (dict(cluster_after=2, temperature=0), "temperature"),
    (dict(cluster_after=2, reconstruct_k=0), "reconstruct_k"),
    (dict(cluster_after=2, reconstruct_normalize="max"), "reconstruct_normalize"),
    (dict(cluster_after=2, reconstruct_neighbours="near"), "reconstruct_neighbours"),
])
def test_bad_arguments_raise_at_build(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MODELS.build(dict(type="ExpeditedViT", **SMALL, **kwargs))


def _segmenter(backbone_type, **expedite):
    from mmengine.registry import init_default_scope
    init_default_scope("mmseg")
    return MODELS.build(dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3),
        backbone=dict(type=backbone_type, **SMALL, **expedite),
        decode_head=dict(type="SegmenterMaskTransformerHead", in_channels=32, channels=32,
                         num_classes=5, num_layers=1, num_heads=2, embed_dims=32,
                         dropout_ratio=0.0),
        test_cfg=dict(mode="whole")))


def test_official_segmenter_checkpoint_loads_unmodified(tmp_path):
    """A checkpoint in mmseg's release format (meta with numpy + state_dict), saved from the
    stock Segmenter, loads into the expedited Segmenter with no missing/unexpected keys."""
    import numpy as np
    from mmengine.runner import load_checkpoint

    stock = _segmenter("VisionTransformer")
    path = tmp_path / "segmenter_official.pth"
    torch.save({"meta": {"mmseg_version": "0.20.0", "CLASSES": tuple("abcde"),
                         "PALETTE": np.zeros((5, 3), np.uint8), "iter": np.int64(160000)},
                "state_dict": stock.state_dict()}, path)
    ours = _segmenter("ExpeditedViT", cluster_after=2, cluster_grid=(8, 8))
    from expedite_mm.apis.checkpoint import checkpoint_policy
    with checkpoint_policy():                # the numpy metadata needs the allow-list
        load_checkpoint(ours, str(path), map_location="cpu", strict=True)   # raises on any mismatch
    for (name, a), (_, b) in zip(stock.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name
