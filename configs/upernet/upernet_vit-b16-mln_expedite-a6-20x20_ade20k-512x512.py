# UPerNet + ViT-B/16 (MLN neck), ADE20K 512x512, expedited harder than the a6-24x24
# config it inherits: 20x20 centres after layer 6 (docs/method.md §4; GFLOPs and token
# fidelity in checkpoints.md).
_base_ = './upernet_vit-b16-mln_expedite-a6-24x24_ade20k-512x512.py'
model = dict(backbone=dict(cluster_grid=(20, 20)))
