# Checkpoint: your own mmdet checkpoint (none is public)
# Mask2Former Swin-L (IN-22k, window 12), YouTube-VIS 2019: the stock model, which mmdet
# ships for 2021 only. Its 2021 Swin-L config with the 2019 data and schedule (as mmdet's
# R-50 2019/2021 pair differ), and the Mask2Former (VIS) paper's 2019 Swin-L test size:
# short side 480 (detectron2 config video_maskformer2_swin_large_IN21k_384_bs16_8ep.yaml;
# the 2021 model tests at 360). Initialised for training from mmdet's COCO panoptic
# Mask2Former Swin-L, as the 2021 recipe; no OpenMMLab 2019 checkpoint exists.
_base_ = 'mmdet::mask2former_vis/mask2former_swin-l-p4-w12-384-in21k_8xb2-8e_youtubevis2021.py'

data_root = 'data/youtube_vis_2019/'
dataset_version = '2019'

test_pipeline = [
    dict(
        type='TransformBroadcaster',
        transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(1333, 480), keep_ratio=True),
            dict(type='LoadTrackAnnotations', with_mask=True),
        ]),
    dict(type='PackTrackInputs')
]
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        dataset_version=dataset_version,
        ann_file='annotations/youtube_vis_2019_train.json'))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        dataset_version=dataset_version,
        ann_file='annotations/youtube_vis_2019_valid.json',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 6000
param_scheduler = dict(end=max_iters, milestones=[4000])
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
default_hooks = dict(checkpoint=dict(interval=2000))
