# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/mae/upernet_mae-base_fp16_8x2_512x512_160k_ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k_20220426_174752-f92a2975.pth
# UPerNet + MAE ViT-B/16, ADE20K 512x512: 16x16 centres after layer 4.
_base_ = './upernet_mae-b16_expedite-a4-22x22_ade20k-512x512.py'
model = dict(backbone=dict(cluster_grid=(16, 16)))
