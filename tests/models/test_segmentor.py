"""The logits placement (docs/method.md §4.1): ExpeditedEncoderDecoder + ExpeditedViT with
``reconstruct_placement='logits'`` against Expedit-Segmenter's released computation.

The reference is written here from the description (the release's ``hourglass_vit.py`` +
``encoder_decoder.py``): the *stock* modules of the same model run the layers and the
head, clustering and reconstruction are tests/helpers/naive.py's float64 re-derivations, and the
slide loop is written out; nothing of expedite_mm's forward code is used.
"""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()  # registers the classes
import naive
from expedite_mm.analysis.flops import count_flops, model_flops

NUM_CLASSES = 7
VIT = dict(type="ExpeditedViT", img_size=(64, 64), patch_size=16, embed_dims=32, num_layers=4,
           num_heads=2, mlp_ratio=2, final_norm=True, with_cls_token=True,
           norm_cfg=dict(type="LN", eps=1e-6), drop_path_rate=0.0)
HEAD = dict(type="SegmenterMaskTransformerHead", in_channels=32, channels=32,
            num_classes=NUM_CLASSES, num_layers=1, num_heads=2, embed_dims=32, dropout_ratio=0.0,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
# Small, non-square, non-default operator settings, so that every one of them matters.
OPS = dict(cluster_after=2, cluster_grid=(4, 5), cluster_window=3, cluster_iters=3,
           temperature=20.0, reconstruct_k=6, reconstruct_placement="logits",
           reconstruct_normalize="l2", reconstruct_ties="keep")
SLIDE = dict(mode="slide", crop_size=(80, 96), stride=(64, 64))


# A Segmenter on the hybrid (a ResNet stem, then the ViT on its stride-8 features) without
# ResNet taps, as the project's accuracy benchmark: the logits placement applies.
HYBRID = dict({k: v for k, v in VIT.items() if k not in ("patch_size", "img_size")},
              type="ExpeditedHybridViT", img_size=(48, 48), resnet_depths=(1, 1),
              resnet_channels=(32, 64), resnet_stem_channels=16, resnet_num_groups=8,
              resnet_out_indices=())


def build(test_cfg=None, segmentor="ExpeditedEncoderDecoder", decode_head=HEAD, seed=0,
          base=VIT, **backbone):
    """A tiny Segmenter; the same seed gives the same weights whatever the expedite options."""
    from mmengine.config import ConfigDict
    init_default_scope("mmseg")
    torch.manual_seed(seed)
    model = MODELS.build(dict(type=segmentor, backbone={**base, **backbone},
                              decode_head=decode_head,
                              test_cfg=ConfigDict(test_cfg or dict(mode="whole"))))
    with torch.no_grad():     # stock init leaves these at zero: give the tokens positions
        model.backbone.pos_embed.normal_(0, 0.5)
        model.backbone.cls_token.normal_(0, 0.5)
    return model.eval()


def metas(batch, shape):
    return [dict(img_shape=shape, ori_shape=shape, pad_shape=shape) for _ in range(batch)]


# --------------------------------------------------------------------------- the reference
def release_encode_decode(model, image, cluster_after, grid, window, iters, temperature, k,
                          normalize):
    """Expedit-Segmenter's ``encode_decode`` for one crop: the stock ViT layers, clustering
    after layer ``cluster_after`` (naive, float64), the remaining layers and the final norm
    on the centres (class token alongside), the stock head on the h x w centre map, the
    head's logits reconstructed to the token grid (weights: the tokens before clustering and
    the centres after the EM; naive, float64), then the bilinear resize to the crop."""
    vit, head = model.backbone, model.decode_head
    B = image.shape[0]
    stem = getattr(vit, "resnet", None)           # the hybrid: its ViT sees the ResNet's map
    tokens, hw = vit.patch_embed(image if stem is None else stem(image)[-1])
    x = torch.cat([vit.cls_token.expand(B, -1, -1), tokens], 1)
    x = vit._pos_embeding(x, hw, vit.pos_embed)
    for number, layer in enumerate(vit.layers, start=1):
        x = layer(x)
        if number == len(vit.layers):
            x = vit.norm1(x)
        if number == cluster_after:
            z = x[:, 1:].double()
            centres = torch.stack([naive.cluster(z[b], hw, grid, window, iters, temperature)
                                   for b in range(B)])
            x = torch.cat([x[:, :1], centres.to(x.dtype)], 1)
    centre_map = x[:, 1:].transpose(1, 2).reshape(B, -1, *grid)
    logits = head.forward([centre_map])                                  # (B, K, h, w)
    assert logits.shape[2:] == grid
    full = torch.stack([naive.reconstruct(z[b], centres[b], logits[b].flatten(1).t(), k,
                                          temperature, normalize) for b in range(B)])
    full = full.transpose(1, 2).reshape(B, -1, *hw).to(image.dtype)          # (B, K, H, W)
    return F.interpolate(full, size=image.shape[2:], mode="bilinear", align_corners=False)


def release_slide(model, image, crop, stride, **ops):
    """The sliding-window loop of the release (and of mmseg): every crop on its own,
    overlaps averaged."""
    B, _, H, W = image.shape
    (ch, cw), (sh, sw) = crop, stride
    out = torch.zeros(B, NUM_CLASSES, H, W)
    count = torch.zeros(1, 1, H, W)
    for r in range(max(H - ch + sh - 1, 0) // sh + 1):
        for c in range(max(W - cw + sw - 1, 0) // sw + 1):
            y2, x2 = min(r * sh + ch, H), min(c * sw + cw, W)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            crop_image = image[:, :, y1:y2, x1:x2]
            out[:, :, y1:y2, x1:x2] += release_encode_decode(model, crop_image, **ops)
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def reference_ops(**overrides):
    ops = {**OPS, **overrides}
    return dict(cluster_after=ops["cluster_after"], grid=ops["cluster_grid"],
                window=ops["cluster_window"], iters=ops["cluster_iters"],
                temperature=ops["temperature"], k=ops["reconstruct_k"],
                normalize=ops["reconstruct_normalize"])


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("shape,normalize", [
    ((96, 96), "l2"),          # 6 x 6 tokens -> 4 x 5 centres
    ((96, 128), "l2"),         # non-square: 6 x 8 tokens
    ((112, 80), "sum"),        # the paper's normalisation too
])
def test_whole_inference_equals_the_release_computation(shape, normalize):
    model = build(**{**OPS, "reconstruct_normalize": normalize})
    image = torch.randn(2, 3, *shape)
    with torch.no_grad():
        ours = model.inference(image, metas(2, shape))
        expected = release_encode_decode(model, image,
                                         **reference_ops(reconstruct_normalize=normalize))
    assert ours.shape == (2, NUM_CLASSES, *shape)
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    # the placement matters: reconstructing the features inside the backbone differs
    in_backbone = build(**{**OPS, "reconstruct_normalize": normalize,
                           "reconstruct_placement": "backbone"})
    with torch.no_grad():
        other = in_backbone.inference(image, metas(2, shape))
    assert (other - expected).abs().max() > 0.05


@pytest.mark.parametrize("shape", [(72, 88), (64, 64)])    # 9 x 11 and 8 x 8 tokens
def test_hybrid_without_resnet_taps_equals_the_release_computation(shape):
    model = build(base=HYBRID, **OPS)
    image = torch.randn(2, 3, *shape)
    with torch.no_grad():
        ours = model.inference(image, metas(2, shape))
        expected = release_encode_decode(model, image, **reference_ops())
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    # disabled: bit for bit the stock HybridViT Segmenter, with its keys
    stock = build(base=dict(HYBRID, type="HybridViT"), segmentor="EncoderDecoder")
    disabled = build(base=HYBRID)
    assert list(stock.state_dict()) == list(disabled.state_dict())
    with torch.no_grad():
        assert torch.equal(stock.inference(image, metas(2, shape)),
                           disabled.inference(image, metas(2, shape)))


def test_slide_inference_equals_the_release_computation():
    """Overlapping crops of a non-square image (2 x 2 crops of 5 x 6 tokens), batch 2:
    every crop clusters and reconstructs on its own."""
    model = build(test_cfg=SLIDE, **OPS)
    image = torch.randn(2, 3, 112, 160)
    with torch.no_grad():
        ours = model.inference(image, metas(2, (112, 160)))
        expected = release_slide(model, image, SLIDE["crop_size"], SLIDE["stride"],
                                 **reference_ops())
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    with torch.no_grad():
        predicted = model.predict(image, None)
    assert [p.pred_sem_seg.data.shape for p in predicted] == [(1, 112, 160)] * 2
    torch.testing.assert_close(predicted[1].seg_logits.data, expected[1], atol=2e-5, rtol=1e-4)


def test_tensor_forward_is_the_reconstructed_logits_on_the_token_grid():
    model = build(**OPS)
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        logits = model._forward(image)
        expected = release_encode_decode(model, image, **reference_ops())
    assert logits.shape == (1, NUM_CLASSES, 6, 8)
    assert logits.is_contiguous()   # not a channels-last view: the resize would stay one (slow)
    # the resize of a token-grid map to the image is the only step left
    resized = F.interpolate(logits, size=(96, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized, expected, atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------- stock behaviour
def test_disabled_is_bit_identical_to_encoder_decoder_with_the_same_keys():
    stock = build(test_cfg=SLIDE, segmentor="EncoderDecoder", type="VisionTransformer")
    ours = build(test_cfg=SLIDE, **{**OPS, "cluster_after": None})
    assert list(ours.state_dict()) == list(stock.state_dict())
    ours.load_state_dict(stock.state_dict())
    image = torch.randn(2, 3, 112, 160)
    with torch.no_grad():
        assert torch.equal(ours.inference(image, metas(2, (112, 160))),
                           stock.inference(image, metas(2, (112, 160))))
        assert torch.equal(ours._forward(image), stock._forward(image))


def test_official_checkpoint_keys_load_strictly(tmp_path):
    from mmengine.runner import load_checkpoint
    stock = build(segmentor="EncoderDecoder", type="VisionTransformer", seed=1)
    path = tmp_path / "official.pth"
    torch.save({"meta": {}, "state_dict": stock.state_dict()}, path)
    ours = build(**OPS)
    load_checkpoint(ours, str(path), map_location="cpu", strict=True)
    for (name, a), b in zip(stock.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), name


def test_input_too_small_runs_the_stock_path_with_one_warning():
    ours = build(**{**OPS, "cluster_grid": (8, 8)})
    stock = build(**{**OPS, "cluster_grid": (8, 8), "cluster_after": None})
    image = torch.randn(1, 3, 96, 96)                         # 6 x 6 tokens < 8 x 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            first = ours.inference(image, metas(1, (96, 96)))
            ours.inference(image, metas(1, (96, 96)))
    assert len([w for w in caught if "not fewer tokens" in str(w.message)]) == 1
    with torch.no_grad():
        assert torch.equal(first, stock.inference(image, metas(1, (96, 96))))


def test_loss_trains_through_the_centres_and_inference_mode_leaves_autograd_working():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    model = build(**OPS).train()
    image = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        model.eval()._forward(image)
    model.train()
    samples = [SegDataSample(metainfo=dict(img_shape=(96, 128)),
                             gt_sem_seg=PixelData(data=torch.randint(0, NUM_CLASSES, (1, 96, 128))))
               for _ in range(2)]
    losses = model.loss(image, samples)
    assert set(losses) == {"decode.loss_ce", "decode.acc_seg"}
    losses["decode.loss_ce"].backward()
    for name in ("backbone.layers.3.ffn.layers.1.weight", "backbone.layers.0.ffn.layers.1.weight",
                 "decode_head.cls_emb"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("change,match", [
    (dict(decode_head=dict(type="FCNHead", in_channels=[32, 32], channels=16, num_convs=1,
                           in_index=[0, 1], input_transform="resize_concat",
                           num_classes=NUM_CLASSES), out_indices=(2, 3)),
     "decode_head FCNHead .*several scales"),
    (dict(decode_head=dict(type="UPerHead", in_channels=[32] * 4, in_index=[0, 1, 2, 3],
                           channels=16, num_classes=NUM_CLASSES), out_indices=(0, 1, 2, 3)),
     "out_indices must all be >= cluster_after"),
    (dict(decode_head=dict(type="UPerHead", in_channels=[32] * 2, in_index=[0, 1],
                           pool_scales=(1, 2), channels=16, num_classes=NUM_CLASSES),
          out_indices=(2, 3)),
     "decode_head UPerHead .*full token grid"),
])
def test_heads_that_cannot_run_on_the_centre_map_are_refused_at_build(change, match):
    change = dict(change)
    head = change.pop("decode_head")
    with pytest.raises(ValueError, match=match):
        build(decode_head=head, **OPS, **change)


def test_a_neck_and_a_multi_scale_auxiliary_head_are_refused_but_a_single_map_head_runs():
    init_default_scope("mmseg")
    base = dict(type="ExpeditedEncoderDecoder", backbone={**VIT, **OPS, "out_indices": (2, 3)},
                decode_head=HEAD, test_cfg=dict(mode="whole"))
    with pytest.raises(ValueError, match="the neck MultiLevelNeck"):
        MODELS.build(dict(base, neck=dict(type="MultiLevelNeck", in_channels=[32, 32],
                                          out_channels=32, scales=[1, 2])))
    with pytest.raises(ValueError, match=r"auxiliary_head\[1\] FCNHead"):
        MODELS.build(dict(base, auxiliary_head=[
            dict(type="FCNHead", in_channels=32, channels=8, num_convs=1, in_index=0,
                 num_classes=NUM_CLASSES),
            dict(type="FCNHead", in_channels=[32, 32], channels=8, num_convs=1, in_index=[0, 1],
                 input_transform="resize_concat", num_classes=NUM_CLASSES)]))
    # a convolutional head on one map runs on the centres, its logits reconstructed
    model = build(decode_head=dict(type="FCNHead", in_channels=32, channels=8, num_convs=1,
                                   num_classes=NUM_CLASSES), **OPS)
    with torch.no_grad():
        assert model._forward(torch.randn(2, 3, 96, 128)).shape == (2, NUM_CLASSES, 6, 8)


@pytest.mark.parametrize("backbone,match", [
    (dict(OPS, reconstruct_placement="head"), "reconstruct_placement must be one of"),
    (dict(OPS, reconstruct_after=4), "reconstruct_after must be None"),
    (dict(OPS, reducer=dict(type="EViT")), "grid reducers"),
    (dict(OPS, reducer=dict(type="ToMe")), "grid reducers"),
    (dict(OPS, out_indices=(1, 3)), "out_indices must all be >= cluster_after=2"),
    (dict(OPS, out_origin=True), "out_origin False"),
])
def test_backbone_arguments_of_the_logits_placement_are_validated(backbone, match):
    init_default_scope("mmseg")
    with pytest.raises(ValueError, match=match):
        MODELS.build({**VIT, **backbone})


def test_placement_is_refused_where_it_does_not_exist():
    init_default_scope("mmseg")
    with pytest.raises(ValueError, match="reconstruct_placement is not an argument"):
        MODELS.build(dict(type="ExpeditedSwin", embed_dims=32, depths=(2, 2, 2, 2),
                          num_heads=(1, 2, 4, 8), window_size=4, cluster_after=1,
                          reconstruct_placement="logits"))
    with pytest.raises(ValueError, match="not available for ExpeditedHybridViT"):
        MODELS.build(dict(type="ExpeditedHybridViT", embed_dims=32, num_layers=4, num_heads=2,
                          resnet_depths=(1, 1, 1), out_indices=(3,), cluster_after=2,
                          reconstruct_placement="logits"))
    # the centre maps are only meaningful to the segmentor: a plain forward refuses
    vit = MODELS.build({**VIT, **OPS})
    with pytest.raises(RuntimeError, match="ExpeditedEncoderDecoder"):
        vit(torch.randn(1, 3, 96, 96))
    # the AvgPool grid reducer (+ bilinear logits) is a grid too: allowed
    MODELS.build({**VIT, **OPS, "reducer": dict(type="AvgPool"),
                  "reconstructor": dict(type="Bilinear")})


# --------------------------------------------------------------------------- FLOPs
def test_flops_count_the_head_on_the_centres_and_the_logit_reconstruction():
    """Whole model = backbone + head on the 4 x 5 centre map + the logit reconstruction
    (k-NN weights from the tokens and centres, then the weighted sum of the logits)."""
    model = build(**OPS)
    shape = (96, 128)
    counted = model_flops(model, shape)
    centre_map = torch.randn(1, 32, 4, 5)
    head = count_flops(model.decode_head, ([centre_map],)).total
    N, M, C, k = 6 * 8, 4 * 5, 32, OPS["reconstruct_k"]
    reconstruction = N * M * C + N * k * NUM_CLASSES     # distances (one matmul) + gather
    assert counted.whole == counted.backbone + head + reconstruction
    backbone_only = model_flops(model, shape, backbone_only=True)
    assert backbone_only.backbone == counted.backbone
    # clustering (counted in the backbone) + the logit reconstruction
    assert counted.expedite_ops == backbone_only.expedite_ops + reconstruction
    # vs reconstructing inside the backbone: the head sees 48 tokens instead of 20
    in_backbone = model_flops(build(**{**OPS, "reconstruct_placement": "backbone"}), shape)
    full_head = count_flops(model.decode_head, ([torch.randn(1, 32, 6, 8)],)).total
    assert in_backbone.whole - counted.whole > 0.5 * (full_head - head) > 0
    assert math.isclose(in_backbone.whole - in_backbone.backbone, full_head)
