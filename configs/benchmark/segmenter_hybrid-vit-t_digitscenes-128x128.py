# The project's accuracy benchmark, stock: a small Segmenter trained here (tools/train.py)
# on DigitScenes (tools/dataset_converters/digit_scenes.py: scikit-image photos with
# objects shaped like scikit-learn's handwritten digits and cut from ten scikit-image
# material textures; 11 classes, 128x128), the checkpoint shipped in checkpoints/
# (checkpoints.md). mmseg's Segmenter ViT-Tiny config with
#   * a hybrid backbone: a two-stage BiT ResNet stem (stride 8) before a 12-layer ViT of
#     width 128 (4 heads), so that a model trained from scratch on 2 CPU cores learns the
#     classes, not only foreground (a plain ViT-Ti did not, in tens of minutes); 16x16
#     tokens at 128x128;
#   * the mask-transformer head on 11 classes (plus a linear auxiliary head during training),
#     whole-image inference;
#   * AdamW, a 200-step warm-up then poly schedule over 2000 steps, DigitScenes pipelines.
_base_ = 'mmseg::segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

crop_size = (128, 128)
num_classes = 11
data_root = 'data/digit_scenes'
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='HybridViT',
        resnet_depths=(2, 4),
        resnet_channels=(128, 256),
        resnet_stem_channels=64,
        resnet_num_groups=8,
        resnet_out_indices=(),
        img_size=crop_size,
        embed_dims=128,
        num_layers=12,
        num_heads=4,
        drop_path_rate=0.0,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
        with_cls_token=True,
        interpolate_mode='bicubic'),
    decode_head=dict(
        in_channels=128, channels=128, embed_dims=128, num_heads=4, num_classes=num_classes,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True)),
    # a linear auxiliary head on the same map, for training only: from scratch the mask
    # transformer alone stays at the background prior for hundreds of iterations
    auxiliary_head=dict(
        type='FCNHead', in_channels=128, channels=128, num_convs=0, concat_input=False,
        kernel_size=1, dropout_ratio=0.0, num_classes=num_classes, in_index=-1,
        norm_cfg=None, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4,
                         avg_non_ignore=True)),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # a no-op on the 128x128 scenes; the uniform-downsampling baseline rescales it
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadCheckedAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='DigitScenesDataset',
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='DigitScenesDataset',
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 2000
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=200),
    dict(type='PolyLR', eta_min=1e-6, power=1.0, by_epoch=False, begin=200, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=250)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2,
                    save_best='mIoU'))
randomness = dict(seed=0)
