# Checkpoint: checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_h_14_swag-80465313.pth checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
# SWAG ViT-H/14 fine-tuned end to end on ImageNet-1k at 518x518 (37x37 tokens), evaluated
# as the SWAG release does (see the ViT-L/16 config this one inherits; resolution 518).
# Published: 88.55 top-1 (torchvision's IMAGENET1K_SWAG_E2E_V1); Expedit-SWAG README:
# 1023.2 GFLOPs, 5.0 FPS (V100), 88.5.
# Weights: converted with tools/model_converters/swag2mmpretrain.py (checkpoints.md).
_base_ = './vit-large-p16_swag-pre_3rdparty_in1k-512px.py'
image_size = 518
model = dict(
    backbone=dict(arch='huge', patch_size=14, img_size=image_size),
    head=dict(in_channels=1280))

test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow',
         color_type='color_ignore_orientation'),
    dict(type='ResizeEdge', scale=image_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
load_from = 'checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth'
