# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/mae/upernet_mae-base_fp16_8x2_512x512_160k_ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k_20220426_174752-f92a2975.pth
# UPerNet + MAE ViT-B/16 on ADE20K (512x512 windows at stride 341, 32x32 tokens), mmseg's
# config and checkpoint, expedited: token clustering after layer 4 into 22x22 centres,
# layers 5-12 on the centres, reconstruction after layer 12 (taps at layers 4, 6, 8, 12:
# the first before clustering, those at 6 and 8 reconstructed). MAE's layers carry
# BEiT's relative position bias, read for the centres as for BEiT (docs/method.md §4.5).
# No published expedited number (mmseg: 48.13 mIoU stock). GFLOPs: checkpoints.md.
_base_ = 'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,   # test-time: the MAE pre-training is replaced by load_from
    backbone=dict(type='ExpeditedMAE', cluster_after=4, cluster_grid=(22, 22)))
load_from = ('https://download.openmmlab.com/mmsegmentation/v0.5/mae/'
             'upernet_mae-base_fp16_8x2_512x512_160k_ade20k/'
             'upernet_mae-base_fp16_8x2_512x512_160k_ade20k_20220426_174752-f92a2975.pth')
