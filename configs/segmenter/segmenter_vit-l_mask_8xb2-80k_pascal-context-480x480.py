# Checkpoint: checkpoints/segmenter-original_vit-l_mask_pascal-context-480x480.pth
#   made by: python tools/model_converters/segmenter2mmseg.py https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/pascal_context/seg_large_mask/checkpoint.pth checkpoints/segmenter-original_vit-l_mask_pascal-context-480x480.pth
# Segmenter ViT-L/16 + mask transformer on Pascal-Context (60 classes, background
# included, as the original release trains and evaluates), 480x480 crops: the recipe of
# the original Segmenter release (rstrudel/segmenter: 256 epochs x 16 images ~ 80k
# iterations, SGD lr 0.001, no weight decay, poly schedule; images resized to a shorter
# side of 520, sliding-window test with 480 windows and stride 320), in mmseg's
# conventions. mmseg ships neither this config nor a checkpoint: convert the original
# release's checkpoint with tools/model_converters/segmenter2mmseg.py (see checkpoints.md).
# Published (Expedit release, original weights): 338.7 GFLOPs, 14.7 FPS (V100), 58.07 mIoU.
_base_ = [
    '../_base_/models/segmenter_vit-l16_mask_original.py',
    'mmseg::_base_/datasets/pascal_context.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (480, 480)
# The original scales images to a shorter side of 520 (long side up to 8x): mmseg's
# pascal_context base (520, 520) would bound the longer side instead.
img_scale = (4160, 520)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=60),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
optimizer = dict(lr=0.001, weight_decay=0.0)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer)
train_dataloader = dict(
    # num_gpus: 8 -> batch_size: 16
    batch_size=2,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
