# Segmenter ViT-B/16 on ADE20K (512x512 crops, 32x32 tokens), expedited: token clustering
# after layer 6 into 20x20 centres, layers 7-12 on the centres, token reconstruction
# after layer 12 (after the final norm). Only the backbone type and the expedite
# arguments change; window 5x5, 5 iterations, tau 50, k 20 are the defaults.
# Published (paper Table 5, ViT-B/16): 124.7 -> 91.9 GFLOPs (ratio 0.737), mIoU 48.48 ->
# 48.40 (on the original Segmenter weights). The paper gives no alpha / grid for ViT-B:
# this pair is the one whose whole-model fvcore ratio matches 0.737. Measured (fvcore,
# whole Segmenter / backbone only, expedited / stock at 512x512; stock 129.42 / 107.13):
#   a4 24x24 0.743 / 0.689   a5 22x22 0.731 / 0.675   a6 20x20 0.737 / 0.682
#   a7 16x16 0.735 / 0.680   a5 20x20 0.692 / 0.628   a6 22x22 0.771 / 0.723
# Weights: the official mmseg checkpoint, unmodified (mmseg reports 49.6 mIoU for it).
_base_ = 'mmseg::segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        type='ExpeditedViT',
        cluster_after=6,
        reconstruct_after=12,
        cluster_grid=(20, 20),
        # The released code divides the reconstruction weights by their L2 norm (the
        # paper's Eq. 4 sums them to 1): 'l2' reproduces the released numbers.
        reconstruct_normalize='l2'))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/segmenter/segmenter_vit-b_mask_8x1_512x512_160k_ade20k/segmenter_vit-b_mask_8x1_512x512_160k_ade20k_20220105_151706-bc533b08.pth'  # noqa
