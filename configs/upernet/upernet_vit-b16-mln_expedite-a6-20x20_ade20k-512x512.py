# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/vit/upernet_vit-b16_mln_512x512_160k_ade20k/upernet_vit-b16_mln_512x512_160k_ade20k_20210624_130547-852fa768.pth
# UPerNet + ViT-B/16 (MLN neck), ADE20K 512x512, expedited harder than the a6-24x24
# config it inherits: 20x20 centres after layer 6 (docs/method.md §4; GFLOPs and token
# fidelity in checkpoints.md).
_base_ = './upernet_vit-b16-mln_expedite-a6-24x24_ade20k-512x512.py'
model = dict(backbone=dict(cluster_grid=(20, 20)))
