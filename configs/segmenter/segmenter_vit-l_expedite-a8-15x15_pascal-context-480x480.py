# Segmenter ViT-L/16, Pascal-Context (480x480 windows, 30x30 tokens), expedited: token clustering
# after layer 8 into 15x15 centres, layers 9-24 on the centres, token
# reconstruction after layer 24 (after the final norm). Only the backbone type and the
# expedite arguments change; window 5x5, 5 iterations, tau 50, k 20 are the defaults.
# Published (Expedit release README; not in the paper's tables): 161.0 GFLOPs,
# 25.0 FPS (V100), 55.08 mIoU;
# baseline 338.7 GFLOPs, 14.7 FPS, 58.07 mIoU.
# Weights: the original Segmenter release's checkpoint converted to mmseg keys with
# tools/model_converters/segmenter2mmseg.py (checkpoints.md), otherwise unmodified.
_base_ = './segmenter_vit-l_mask_8xb2-80k_pascal-context-480x480.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        type='ExpeditedViT',
        cluster_after=8,
        reconstruct_after=24,
        cluster_grid=(15, 15),
        # The released code divides the reconstruction weights by their L2 norm (the
        # paper's Eq. 4 sums them to 1): 'l2' reproduces the released numbers.
        reconstruct_normalize='l2'))
load_from = 'checkpoints/segmenter-original_vit-l_mask_pascal-context-480x480.pth'  # noqa
