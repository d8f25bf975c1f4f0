# Checkpoint: your own HTC++ checkpoint (none is public)
# HTC++ with a SwinV2-L backbone on COCO (instance segmentation with the semantic branch),
# written in mmdet 3 terms: the Swin papers' HTC++ recipe was never released as a config,
# and no COCO-trained SwinV2-L HTC++ checkpoint is public (see checkpoints.md). This is the
# STOCK model; htc++_swinv2-l_expedite-a12-w23_coco.py expedites it without fine-tuning.
#
# Windows: SwinV2-L is pre-trained on ImageNet-22K at 192 px with window 12 (stages 1-3;
# the 6x6 last stage attends within 6). SwinV2 detection fine-tunes at 1536 px with window
# 32 (the paper's "window 32 -> 23 in stage 3"), so stage maps 384/192/96 hold exactly
# 12/6/3 windows; the 48x48 last stage takes window 16 (3 windows; mmpretrain's own
# fine-tuning configs halve the last window the same way, e.g. 24 -> 12 at 384 px).
# pretrained_window_sizes tells the continuous position bias which window its log-spaced
# coordinates were learnt at, so they are normalised by 12 - 1 (6 - 1 in stage 4).
#
# HTC++ as in the Swin papers: HTC with the semantic branch, multi-scale training (short
# side 400-1400, long side <= 1600), Soft-NMS at test, 72 epochs (lr steps at 63 and 69),
# AdamW. Left out: InstaBoost (needs the `instaboostfast` package) and the extra global
# self-attention layer after the last stage (never published).
_base_ = 'mmdet::htc/htc_r50_fpn_20e_coco.py'
# mmpretrain's SwinTransformerV2, registered in mmdet's MODELS by expedite_mm (mmengine's
# scoped 'mmpretrain.SwinTransformerV2' would import all of mmpretrain.models, whose
# metrics need torchvision).
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

pretrained = 'https://download.openmmlab.com/mmclassification/v0/swin-v2/pretrain/swinv2-large-w12_3rdparty_in21k-192px_20220803-d9073fee.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformerV2',
        arch='large',
        img_size=1536,
        window_size=[32, 32, 32, 16],
        pretrained_window_sizes=[12, 12, 12, 6],
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        # detection inputs vary in size: pad small maps to the window (mmpretrain's
        # default shrinks the window instead, as for classification)
        pad_small_map=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 768, 1536]),
    test_cfg=dict(
        rcnn=dict(nms=dict(type='soft_nms', iou_threshold=0.5, min_score=0.001))))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='RandomResize', scale=[(1600, 400), (1600, 1400)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    # single scale at SwinV2's detection size: the long side 1536
    dict(type='Resize', scale=(1536, 1536), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 72
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[63, 69],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    # no weight decay on SwinV2's position-bias MLP, attention temperatures and norms
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'cpb_mlp': dict(decay_mult=0.),
            'logit_scale': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }),
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))
# 16 GPUs x 1 image
auto_scale_lr = dict(enable=False, base_batch_size=16)
