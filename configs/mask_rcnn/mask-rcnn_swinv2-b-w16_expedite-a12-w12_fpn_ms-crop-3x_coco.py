# Checkpoint: your own Mask R-CNN checkpoint (none is public)
# Mask R-CNN SwinV2-B on COCO, expedited without fine-tuning as in the paper's SwinV2 HTC++
# setting, scaled to this model's window: every 16x16 window of stage 3 is clustered to
# 12x12 after its 8th block (a12: the 12th block of the backbone, 2 + 2 + 8) and restored
# after its 18th (last) block; w12 = window 12.
# No COCO-trained checkpoint is public: load your own detector with `load_from=...` (or
# `tools/test.py CONFIG CHECKPOINT`); the backbone's init_cfg (inherited) points at the
# official ImageNet-22K SwinV2-B weights.
_base_ = './mask-rcnn_swinv2-b-w16_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='ExpeditedSwinV2',
        stage=2,
        cluster_after=8,
        reconstruct_after=18,
        clustered_window_size=12,
        # the paper's released Swin-family operator settings (as for HTC++ SwinV2-L)
        cluster_window=7,
        cluster_iters=5,
        temperature=20.0,
        reconstruct_k=10,
        reconstruct_normalize='l2'))
