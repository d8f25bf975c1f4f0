# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/dpt/dpt_vit-b16_512x512_160k_ade20k/dpt_vit-b16_512x512_160k_ade20k-db31cf52.pth
# Expedited DPT ViT-B/16 on ADE20K (mmseg's config and checkpoint; 32 x 32 tokens): the
# multi-tap case. DPT taps layers 3, 6, 9 and 12 (out_indices 2, 5, 8, 11): clustering
# after layer 3 leaves the first tap before the span, the taps at layers 6 and 9 are
# reconstructed from the 24 x 24 centres with the clustering's weights, and the last one
# is the reconstruction after layer 12. No published expedited number for this model:
# compare with the stock config (mIoU 46.97 single scale, mmseg's metafile) yourself.
_base_ = 'mmseg::dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,   # test-time: the ImageNet initialisation is replaced by load_from
    backbone=dict(
        type='ExpeditedViT',
        cluster_after=3,
        reconstruct_after=12,
        cluster_grid=(24, 24)))
load_from = ('https://download.openmmlab.com/mmsegmentation/v0.5/dpt/'
             'dpt_vit-b16_512x512_160k_ade20k/dpt_vit-b16_512x512_160k_ade20k-db31cf52.pth')
