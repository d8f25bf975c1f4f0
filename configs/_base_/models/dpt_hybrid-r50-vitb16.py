# DPT-Hybrid (R50+ViT-B/16) depth model as released by isl-org/DPT, in mmseg conventions:
# DepthEstimator + HybridViT (BiT ResNet-50 stem, ViT-B/16 on its stride-16 features) +
# DPTDepthHead. The dataset configs set the input size (data_preprocessor.size) and the
# head's inverse-depth scale/shift of their release.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],   # DPT normalises RGB in [0, 1] with mean = std = 0.5
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0)
model = dict(
    type='DepthEstimator',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='HybridViT',
        img_size=384,                 # pre-training size: a 24 x 24 position grid
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        mlp_ratio=4,
        out_indices=(8, 11),          # DPT's taps: ViT layers 9 and 12 (+ ResNet stages 1, 2)
        final_norm=False,             # the taps are block outputs, before the final norm
        with_cls_token=True,
        output_cls_token=True,        # for the readout projection
        norm_cfg=dict(type='LN', eps=1e-6),
        interpolate_mode='bilinear'),
    decode_head=dict(
        type='DPTDepthHead',
        in_channels=(256, 512, 768, 768),
        channels=256,
        post_process_channels=(256, 512, 768, 768),
        reassemble_factors=(None, None, 1, 0.5),
        readout_type='project',
        head_channels=32,
        non_negative=True,
        invert=True),                 # inverse depth: 1 / (depth_scale * out + depth_shift),
                                      # scale and shift set per dataset (as released)
    test_cfg=dict(mode='whole'))
