# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/segmenter/segmenter_vit-b_mask_8x1_512x512_160k_ade20k/segmenter_vit-b_mask_8x1_512x512_160k_ade20k_20220105_151706-bc533b08.pth
# Segmenter ViT-B/16 + mask transformer on ADE20K (512x512 crops, 32x32 tokens): mmseg's
# official config evaluated as the Expedit-Segmenter release evaluates its ViT-B models,
# with sliding 512x512 windows at stride 512 (its
# configs/segmenter/segmenter-ori_vit-b16_512x512_160k_ade20k.py; mmseg: stride 480).
# The stock baseline of the expedited ViT-B config, which inherits it.
# Published (paper Table 5, original Segmenter weights): 124.7 GFLOPs, 48.48 mIoU.
# Weights: mmseg's official checkpoint, unmodified (mmseg reports 49.6 mIoU for it with
# stride 480).
_base_ = 'mmseg::segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py'
model = dict(test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(512, 512)))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/segmenter/segmenter_vit-b_mask_8x1_512x512_160k_ade20k/segmenter_vit-b_mask_8x1_512x512_160k_ade20k_20220105_151706-bc533b08.pth'  # noqa
