# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/segmenter/segmenter_vit-l_mask_8x1_512x512_160k_ade20k/segmenter_vit-l_mask_8x1_512x512_160k_ade20k_20220105_162750-7ef345be.pth
# Segmenter ViT-L/16 + mask transformer on ADE20K (640x640 crops, 40x40 tokens): mmseg's
# official config (whose file name says 512x512; it crops 640x640) evaluated as the
# Expedit-Segmenter release evaluates it, with sliding 640x640 windows at stride 640
# (its configs/segmenter/segmenter-ori_vit-l16_640x640_160k_ade20k.py; mmseg: stride 608).
# The stock baseline of the expedited ADE20K ViT-L configs, which inherit it.
# Published (Expedit release, original Segmenter weights): 658.98 GFLOPs, 6.55 FPS (V100),
# 51.82 mIoU. Weights: mmseg's official checkpoint, unmodified (mmseg reports 52.16 mIoU for
# it with stride 608).
_base_ = 'mmseg::segmenter/segmenter_vit-l_mask_8xb1-160k_ade20k-512x512.py'
model = dict(test_cfg=dict(mode='slide', crop_size=(640, 640), stride=(640, 640)))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/segmenter/segmenter_vit-l_mask_8x1_512x512_160k_ade20k/segmenter_vit-l_mask_8x1_512x512_160k_ade20k_20220105_162750-7ef345be.pth'  # noqa
