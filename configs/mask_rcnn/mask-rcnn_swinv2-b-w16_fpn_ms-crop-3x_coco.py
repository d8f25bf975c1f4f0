# Checkpoint: your own Mask R-CNN checkpoint (none is public)
# Mask R-CNN with a SwinV2-B backbone on COCO: the smaller SwinV2 detector, for trying the
# SwinV2 path at a moderate cost (1333x800 test size). mmdet's own Swin recipe
# (multi-scale + crop augmentation, AdamW, 36 epochs) with mmpretrain's SwinTransformerV2
# in place of Swin-T. No COCO-trained checkpoint of it is public (see checkpoints.md): the
# backbone starts from the official ImageNet-22K SwinV2-B (192 px, window 12), fine-tuned
# at window 16 (8 in the last stage); pretrained_window_sizes keeps the continuous position
# bias normalised by the pre-training windows. This is the STOCK model;
# mask-rcnn_swinv2-b-w16_expedite-a12-w12_fpn_ms-crop-3x_coco.py expedites it.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
# mmpretrain's SwinTransformerV2, registered in mmdet's MODELS by expedite_mm (mmengine's
# scoped 'mmpretrain.SwinTransformerV2' would import all of mmpretrain.models, whose
# metrics need torchvision).
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

pretrained = 'https://download.openmmlab.com/mmclassification/v0/swin-v2/pretrain/swinv2-base-w12_3rdparty_in21k-192px_20220803-f7dc9763.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformerV2',
        arch='base',
        img_size=1024,
        window_size=[16, 16, 16, 8],
        pretrained_window_sizes=[12, 12, 12, 6],
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        # detection inputs vary in size: pad small maps to the window (mmpretrain's
        # default shrinks the window instead, as for classification)
        pad_small_map=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

optim_wrapper = dict(
    # no weight decay on SwinV2's position-bias MLP, attention temperatures and norms
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'cpb_mlp': dict(decay_mult=0.),
            'logit_scale': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
