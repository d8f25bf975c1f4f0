# UPerNet + MAE ViT-B/16, ADE20K 512x512: 16x16 centres after layer 4.
_base_ = './upernet_mae-b16_expedite-a4-22x22_ade20k-512x512.py'
model = dict(backbone=dict(cluster_grid=(16, 16)))
