# Checkpoint: your own HTC++ checkpoint (none is public)
# HTC++ SwinV2-L on COCO, expedited without fine-tuning: the paper's setting clusters
# every 32x32 window of stage 3 to 23x23 after its 8th block and reconstructs after its
# 18th (last) block; published: +21% FPS, -20% GFLOPs, ~98% of the box/mask AP.
# Name: a12 = clustering after the 12th block of the backbone (2 + 2 + 8: the 8th of stage
# 3; cluster_after counts within `stage`), w23 = window 23.
#
# No COCO-trained SwinV2-L HTC++ checkpoint is public (checkpoints.md): load your own
# detector with `load_from=...` (or `tools/test.py CONFIG CHECKPOINT`); the backbone's
# init_cfg (inherited) points at the official ImageNet-22K SwinV2-L weights.
_base_ = './htc++_swinv2-l_coco.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='ExpeditedSwinV2',
        stage=2,
        cluster_after=8,
        reconstruct_after=18,
        clustered_window_size=23,
        # The paper gives only the windows and blocks for SwinV2; the operator settings
        # are its released Swin-family ones (Mask2Former: lambda 7x7, kappa 5, tau 20,
        # k 10, L2-normalised reconstruction weights as in the released code).
        cluster_window=7,
        cluster_iters=5,
        temperature=20.0,
        reconstruct_k=10,
        reconstruct_normalize='l2'))
