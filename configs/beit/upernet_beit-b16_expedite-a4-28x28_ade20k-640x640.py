# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/beit/upernet_beit-base_8x2_640x640_160k_ade20k/upernet_beit-base_8x2_640x640_160k_ade20k-eead221d.pth
# UPerNet + BEiT-B/16 on ADE20K (640x640 windows at stride 426, 40x40 tokens), mmseg's
# config and checkpoint, expedited: token clustering after layer 4 into 28x28 centres,
# layers 5-12 on the centres, reconstruction after layer 12. UPerNet reads layers 4, 6, 8
# and 12 (out_indices 3, 5, 7, 11): the first before clustering, those at 6 and 8
# reconstructed from the centres. BEiT's relative position bias is read for the centres
# from each layer's own table, at the centres' offsets in token units (docs/method.md §4.5).
# No published expedited number (mmseg: 53.08 mIoU stock). GFLOPs and token fidelity:
# checkpoints.md.
_base_ = 'mmseg::beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,   # test-time: the BEiT pre-training is replaced by load_from
    backbone=dict(type='ExpeditedBEiT', cluster_after=4, cluster_grid=(28, 28)))
load_from = ('https://download.openmmlab.com/mmsegmentation/v0.5/beit/'
             'upernet_beit-base_8x2_640x640_160k_ade20k/'
             'upernet_beit-base_8x2_640x640_160k_ade20k-eead221d.pth')
