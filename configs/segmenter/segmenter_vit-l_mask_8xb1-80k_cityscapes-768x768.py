# Segmenter ViT-L/16 + mask transformer on Cityscapes, 768x768 crops: the recipe of the
# original Segmenter release (rstrudel/segmenter: 216 epochs x 8 images ~ 80k iterations,
# SGD lr 0.01, no weight decay, poly schedule; sliding-window test with 768 windows and
# stride 512 on the full 2048x1024 image), in mmseg's conventions. mmseg ships neither this
# config nor a checkpoint: convert the original release's checkpoint with
# tools/model_converters/segmenter2mmseg.py (see checkpoints.md).
# Published (Expedit release, original weights): 995.6 GFLOPs, 4.20 FPS (V100), 79.14 mIoU.
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (768, 768)
data_preprocessor = dict(size=crop_size)
# ImageNet-21k ViT-L/16 (only used to initialise training; testing uses load_from).
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_large_p16_384_20220308-d4efb41d.pth'  # noqa
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=checkpoint,
    backbone=dict(
        img_size=crop_size,
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        # The original ViT has a patch-embedding bias, torch's default LayerNorm eps and
        # bilinear position-embedding resizing (mmseg's own Segmenter port: no bias, 1e-6,
        # bicubic); the converted weights need exactly these.
        patch_bias=True,
        norm_cfg=dict(type='LN', eps=1e-5, requires_grad=True),
        interpolate_mode='bilinear'),
    decode_head=dict(
        in_channels=1024,
        channels=1024,
        num_heads=16,
        embed_dims=1024,
        num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
optimizer = dict(lr=0.01, weight_decay=0.0)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer)
train_dataloader = dict(
    # num_gpus: 8 -> batch_size: 8
    batch_size=1,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
