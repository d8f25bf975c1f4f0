# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/vit/upernet_deit-s16_mln_512x512_160k_ade20k/upernet_deit-s16_mln_512x512_160k_ade20k_20210621_161021-fb9a5dfb.pth
# UPerNet + DeiT-S/16 (MLN neck), ADE20K 512x512: 20x20 centres after layer 6.
_base_ = './upernet_deit-s16-mln_expedite-a6-24x24_ade20k-512x512.py'
model = dict(backbone=dict(cluster_grid=(20, 20)))
