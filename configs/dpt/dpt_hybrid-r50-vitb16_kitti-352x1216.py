# Checkpoint: checkpoints/dpt_hybrid-r50-vitb16_kitti-352x1216.pth
#   made by: python tools/model_converters/dpt2mmseg.py https://github.com/isl-org/DPT/releases/download/1_0/dpt_hybrid_kitti-cb926ef4.pt checkpoints/dpt_hybrid-r50-vitb16_kitti-352x1216.pth
# DPT-Hybrid (R50+ViT-B/16) fine-tuned on KITTI, as released by isl-org/DPT
# (dpt_hybrid_kitti-cb926ef4.pt), in mmseg conventions: DepthEstimator + HybridViT +
# DPTDepthHead. Evaluation only (expediting needs no training): the KB crop (352x1216)
# of every Eigen-split test image, no resizing, Garg crop, depth capped to (1e-3, 80) m,
# predictions clipped to that range -- DPT's EVALUATION.md protocol (BTS eval_with_pngs).
# Weights: convert the release with tools/model_converters/dpt2mmseg.py (checkpoints.md).
_base_ = ['../_base_/models/dpt_hybrid-r50-vitb16.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

crop_size = (352, 1216)   # 22 x 76 tokens
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(depth_scale=0.00006016, depth_shift=0.00579))

dataset_type = 'KITTIDepthDataset'
data_root = 'data/kitti'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1 / 256),
    dict(type='KBCrop', size=crop_size),
    dict(
        type='PackSegInputs',
        meta_keys=('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                   'scale_factor', 'flip', 'flip_direction', 'crop_offset',
                   'uncropped_shape')),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='eigen_test_files_with_gt.txt',
        data_prefix=dict(img_path='raw', depth_map_path='gt'),
        test_mode=True,
        pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(
    type='MonoDepthMetric',
    min_depth_eval=1e-3,
    max_depth_eval=80.0,
    crop_type='kitti_garg_crop',
    clip_pred=True)
val_evaluator = test_evaluator
test_cfg = dict(type='TestLoop')
val_cfg = dict(type='ValLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    visualization=dict(type='SegVisualizationHook'))

load_from = 'checkpoints/dpt_hybrid-r50-vitb16_kitti-352x1216.pth'   # dpt2mmseg.py output
