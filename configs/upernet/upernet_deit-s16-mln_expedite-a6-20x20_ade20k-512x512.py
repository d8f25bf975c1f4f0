# UPerNet + DeiT-S/16 (MLN neck), ADE20K 512x512: 20x20 centres after layer 6.
_base_ = './upernet_deit-s16-mln_expedite-a6-24x24_ade20k-512x512.py'
model = dict(backbone=dict(cluster_grid=(20, 20)))
