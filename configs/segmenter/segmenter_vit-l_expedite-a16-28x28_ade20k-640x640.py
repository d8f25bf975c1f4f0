# Segmenter ViT-L/16, ADE20K (640x640 crops, 40x40 tokens), expedited: token clustering
# after layer 16 into 28x28 centres, layers 17-24 on the centres, token
# reconstruction after layer 24 (after the final norm). Only the backbone type and the
# expedite arguments change; window 5x5, 5 iterations, tau 50, k 20 are the defaults.
# Published (Expedit release): 529.81 GFLOPs, 7.92 FPS (V100), 51.93 mIoU;
# baseline 658.98 GFLOPs, 6.55 FPS, 51.82 mIoU.
# Weights: the official mmseg checkpoint, unmodified (mmseg reports 52.16 mIoU for it).
# The published numbers were measured on the original Segmenter release's weights
# (checkpoints.md: how to convert and use those instead).
_base_ = 'mmseg::segmenter/segmenter_vit-l_mask_8xb1-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        type='ExpeditedViT',
        cluster_after=16,
        reconstruct_after=24,
        cluster_grid=(28, 28),
        # The released code divides the reconstruction weights by their L2 norm (the
        # paper's Eq. 4 sums them to 1): 'l2' reproduces the released numbers.
        reconstruct_normalize='l2'))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/segmenter/segmenter_vit-l_mask_8x1_512x512_160k_ade20k/segmenter_vit-l_mask_8x1_512x512_160k_ade20k_20220105_162750-7ef345be.pth'  # noqa
