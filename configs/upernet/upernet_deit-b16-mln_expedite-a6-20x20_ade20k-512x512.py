# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/vit/upernet_deit-b16_mln_512x512_160k_ade20k/upernet_deit-b16_mln_512x512_160k_ade20k_20210621_191949-4e1450f3.pth
# UPerNet + DeiT-B/16 (MLN neck), ADE20K 512x512: 20x20 centres after layer 6.
_base_ = './upernet_deit-b16-mln_expedite-a6-24x24_ade20k-512x512.py'
model = dict(backbone=dict(cluster_grid=(20, 20)))
