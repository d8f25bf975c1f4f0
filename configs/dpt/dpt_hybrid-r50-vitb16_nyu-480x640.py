# Checkpoint: checkpoints/dpt_hybrid-r50-vitb16_nyu-480x640.pth
#   made by: python tools/model_converters/dpt2mmseg.py https://github.com/isl-org/DPT/releases/download/1_0/dpt_hybrid_nyu-2ce69ec7.pt checkpoints/dpt_hybrid-r50-vitb16_nyu-480x640.pth
# DPT-Hybrid (R50+ViT-B/16) fine-tuned on NYUv2, as released by isl-org/DPT
# (dpt_hybrid_nyu-2ce69ec7.pt), in mmseg conventions: DepthEstimator + HybridViT +
# DPTDepthHead, on mmseg's NYU dataset layout. Evaluation only: full 640x480 images, no
# resizing, Eigen crop (rows 45:471, columns 41:601), depth capped to (1e-3, 10) m,
# predictions clipped to that range -- DPT's EVALUATION.md protocol (BTS eval_with_pngs).
# Weights: convert the release with tools/model_converters/dpt2mmseg.py (checkpoints.md).
_base_ = ['../_base_/models/dpt_hybrid-r50-vitb16.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

crop_size = (480, 640)   # 30 x 40 tokens
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(depth_scale=0.000305, depth_shift=0.1378))

dataset_type = 'NYUDataset'
data_root = 'data/nyu'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(
        type='PackSegInputs',
        meta_keys=('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                   'scale_factor', 'flip', 'flip_direction', 'category_id')),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        test_mode=True,
        data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
        pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(
    type='MonoDepthMetric',
    min_depth_eval=1e-3,
    max_depth_eval=10.0,
    crop_type='nyu_crop',
    clip_pred=True)
val_evaluator = test_evaluator
test_cfg = dict(type='TestLoop')
val_cfg = dict(type='ValLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    visualization=dict(type='SegVisualizationHook'))

load_from = 'checkpoints/dpt_hybrid-r50-vitb16_nyu-480x640.pth'   # dpt2mmseg.py output
