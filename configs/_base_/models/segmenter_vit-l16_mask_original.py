# Segmenter ViT-L/16 + mask transformer as in the original release (rstrudel/segmenter),
# on mmseg's Segmenter model base. The original ViT has a patch-embedding bias, torch's
# default LayerNorm eps and bilinear position-embedding resizing (mmseg's own Segmenter
# port: no bias, 1e-6, bicubic); weights converted with
# tools/model_converters/segmenter2mmseg.py need exactly these.
_base_ = 'mmseg::_base_/models/segmenter_vit-b16_mask.py'
# ImageNet-21k ViT-L/16 (only used to initialise training; testing uses load_from).
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_large_p16_384_20220308-d4efb41d.pth'  # noqa
model = dict(
    pretrained=checkpoint,
    backbone=dict(
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        patch_bias=True,
        norm_cfg=dict(type='LN', eps=1e-5, requires_grad=True),
        interpolate_mode='bilinear'),
    decode_head=dict(
        in_channels=1024,
        channels=1024,
        num_heads=16,
        embed_dims=1024))
