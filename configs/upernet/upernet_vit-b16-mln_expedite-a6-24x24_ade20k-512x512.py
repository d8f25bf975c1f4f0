# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/vit/upernet_vit-b16_mln_512x512_160k_ade20k/upernet_vit-b16_mln_512x512_160k_ade20k_20210624_130547-852fa768.pth
# UPerNet + ViT-B/16 (MLN neck) on ADE20K at 512x512 (32x32 tokens), mmseg's config and
# checkpoint, expedited: token clustering after layer 6 into 24x24 centres, layers 7-12 on
# the centres, reconstruction after layer 12. UPerNet reads layers 3, 6, 9 and 12
# (out_indices 2, 5, 8, 11): the taps at layers 3 and 6 are taken before clustering
# (dense), the one at layer 9 is reconstructed from the centres with the clustering's
# weights (docs/method.md §4), the last is the reconstruction after layer 12.
# fvcore GFLOPs (tools/analysis/get_flops.py, 512x512) and token fidelity: checkpoints.md.
# No published expedited number for this model (mmseg: 46.75 mIoU stock).
_base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,   # test-time: the ImageNet initialisation is replaced by load_from
    backbone=dict(type='ExpeditedViT', cluster_after=6, cluster_grid=(24, 24)))
load_from = ('https://download.openmmlab.com/mmsegmentation/v0.5/vit/'
             'upernet_vit-b16_mln_512x512_160k_ade20k/'
             'upernet_vit-b16_mln_512x512_160k_ade20k_20210624_130547-852fa768.pth')
