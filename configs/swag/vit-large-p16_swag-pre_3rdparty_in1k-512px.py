# Checkpoint: checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_l_16_swag-4f3808c9.pth checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
# SWAG ViT-L/16, weakly supervised pre-training on IG-3.6B then fine-tuned end to end on
# ImageNet-1k at 512x512 (Singh et al., "Revisiting Weakly Supervised Pre-Training of
# Visual Perception Models", CVPR 2022), evaluated as the SWAG and Expedit-SWAG releases
# do (imagenet_1k_eval.py): PIL decoding, short side resized to 512 (PIL bicubic), 512x512
# centre crop, ImageNet mean/std.
# Published: 88.06 top-1 (torchvision's IMAGENET1K_SWAG_E2E_V1); Expedit-SWAG README:
# 364.8 GFLOPs, 12.7 FPS (V100), 88.1.
# Weights: torchvision's (or SWAG's own) checkpoint converted to mmpretrain keys with
# tools/model_converters/swag2mmpretrain.py (checkpoints.md).
_base_ = [
    'mmpretrain::_base_/models/vit-large-p16.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_pil_resize.py',
    'mmpretrain::_base_/default_runtime.py',
]
# expedite_mm also makes mmpretrain's classification stack usable without torchvision
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
image_size = 512
model = dict(backbone=dict(img_size=image_size, drop_rate=0.0))

test_pipeline = [
    # SWAG's loader: PIL, no EXIF rotation
    dict(type='LoadImageFromFile', imdecode_backend='pillow',
         color_type='color_ignore_orientation'),
    # torchvision's Resize(512, BICUBIC) on a PIL image: these sizes, PIL's bicubic
    dict(type='ResizeEdge', scale=image_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]
val_dataloader = dict(batch_size=32, dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(batch_size=32, dataset=dict(pipeline=test_pipeline))
val_cfg = dict()
test_cfg = dict()
# an evaluation config: SWAG's fine-tuning recipe is not reproduced here
train_dataloader = None
# mmpretrain's default hooks without its VisualizationHook (which needs torchvision and
# draws nothing unless enabled)
default_hooks = dict(
    _delete_=True,
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
load_from = 'checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth'
