# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/vit/upernet_deit-b16_mln_512x512_160k_ade20k/upernet_deit-b16_mln_512x512_160k_ade20k_20210621_191949-4e1450f3.pth
# UPerNet + DeiT-B/16 (MLN neck) on ADE20K at 512x512, mmseg's config and checkpoint,
# expedited as the ViT-B one: clustering after layer 6 into 24x24 centres, reconstruction
# after layer 12; the taps at layers 3 and 6 are dense, the one at layer 9 reconstructed.
# No published expedited number (mmseg: 45.46 mIoU stock). GFLOPs: checkpoints.md.
_base_ = 'mmseg::vit/vit_deit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,   # test-time: the ImageNet initialisation is replaced by load_from
    backbone=dict(type='ExpeditedViT', cluster_after=6, cluster_grid=(24, 24)))
load_from = ('https://download.openmmlab.com/mmsegmentation/v0.5/vit/'
             'upernet_deit-b16_mln_512x512_160k_ade20k/'
             'upernet_deit-b16_mln_512x512_160k_ade20k_20210621_191949-4e1450f3.pth')
