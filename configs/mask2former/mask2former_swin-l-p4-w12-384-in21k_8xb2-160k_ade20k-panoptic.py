# Checkpoint: your own mmdet checkpoint (none is public)
# Mask2Former Swin-L (IN-22k, window 12), ADE20K panoptic segmentation: the stock model,
# which mmdet does not ship. Written in mmdet's conventions from its COCO panoptic Swin-L
# config and its ADE20K panoptic dataset settings, with the Mask2Former paper's ADE20K
# panoptic recipe (detectron2 config maskformer2_swin_large_IN21k_384_bs16_160k.yaml):
# 150 classes (100 things, 50 stuff), 200 queries, 640x640 crops of images resized to a
# random short side in 320..1280, 160k iterations of batch 16, poly learning rate; test at
# short side 640 (long side at most 2560). No OpenMMLab checkpoint exists (checkpoints.md).
_base_ = 'mmdet::mask2former/mask2former_swin-l-p4-w12-384-in21k_16xb1-lsj-100e_coco-panoptic.py'

dataset_type = 'ADE20KPanopticDataset'
data_root = 'data/ADEChallengeData2016/'
num_things_classes = 100
num_stuff_classes = 50
num_classes = num_things_classes + num_stuff_classes
image_size = (640, 640)

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=image_size, img_pad_value=0, pad_mask=True,
             mask_pad_value=0, pad_seg=True, seg_pad_value=255)
    ]),
    panoptic_head=dict(
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(
        num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes),
    # the released ADE20K panoptic row reports PQ: no instance post-processing at test time
    test_cfg=dict(panoptic_on=True, semantic_on=False, instance_on=False))

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize',
         scales=[(2560, 64 * i) for i in range(5, 21)], keep_ratio=True),
    dict(type='RandomCrop', crop_size=image_size, crop_type='absolute',
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadPanopticAnnotations'),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ade20k_panoptic_train.json',
        data_prefix=dict(img='images/training/', seg='ade20k_panoptic_train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ade20k_panoptic_val.json',
        data_prefix=dict(img='images/validation/', seg='ade20k_panoptic_val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='CocoPanopticMetric',
    ann_file=data_root + 'ade20k_panoptic_val.json',
    seg_prefix=data_root + 'ade20k_panoptic_val/')
test_evaluator = val_evaluator

max_iters = 160000
param_scheduler = dict(
    _delete_=True, type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters,
    by_epoch=False)
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000)
