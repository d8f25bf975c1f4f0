# Checkpoint: checkpoints/segmenter-original_vit-l_mask_cityscapes-768x768.pth
#   made by: python tools/model_converters/segmenter2mmseg.py https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/cityscapes/seg_large_mask/checkpoint.pth checkpoints/segmenter-original_vit-l_mask_cityscapes-768x768.pth
# Segmenter ViT-L/16 + mask transformer on Cityscapes, 768x768 crops: the recipe of the
# original Segmenter release (rstrudel/segmenter: 216 epochs x 8 images ~ 80k iterations,
# SGD lr 0.01, no weight decay, poly schedule; sliding-window test with 768 windows and
# stride 512 on the full 2048x1024 image), in mmseg's conventions. mmseg ships neither this
# config nor a checkpoint: convert the original release's checkpoint with
# tools/model_converters/segmenter2mmseg.py (see checkpoints.md).
# Published (Expedit release, original weights): 995.6 GFLOPs, 4.20 FPS (V100), 79.14 mIoU.
# The mask-transformer decoder has ONE layer here (ADE20K / Pascal-Context: two): the
# original Cityscapes Seg-L-Mask/16 has 322M parameters against 334M for the two-layer
# ADE20K / Pascal-Context ones (its README; one decoder layer of width 1024 is 12.6M), and
# Expedit-Segmenter's Cityscapes configs set n_layers=1 (so do its published GFLOPs).
_base_ = [
    '../_base_/models/segmenter_vit-l16_mask_original.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (768, 768)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=19, num_layers=1),
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
