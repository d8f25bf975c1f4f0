# Segmenter ViT-L/16, Cityscapes (768x768 windows, 48x48 tokens), expedited: token clustering
# after layer 10 into 24x24 centres, layers 11-24 on the centres, token
# reconstruction after layer 24 (after the final norm). Only the backbone type and the
# expedite arguments change; window 5x5, 5 iterations, tau 50, k 20 are the defaults.
# Published (Expedit release): 529.64 GFLOPs, 8.02 FPS (V100), 76.20 mIoU;
# baseline 995.6 GFLOPs, 4.20 FPS, 79.14 mIoU.
# Weights: the original Segmenter release's checkpoint converted to mmseg keys with
# tools/model_converters/segmenter2mmseg.py (checkpoints.md), otherwise unmodified.
_base_ = './segmenter_vit-l_mask_8xb1-80k_cityscapes-768x768.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        type='ExpeditedViT',
        cluster_after=10,
        reconstruct_after=24,
        cluster_grid=(24, 24),
        # The released code divides the reconstruction weights by their L2 norm (the
        # paper's Eq. 4 sums them to 1): 'l2' reproduces the released numbers.
        reconstruct_normalize='l2'))
load_from = 'checkpoints/segmenter-original_vit-l_mask_cityscapes-768x768.pth'  # noqa
