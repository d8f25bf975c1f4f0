# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/beit/upernet_beit-base_8x2_640x640_160k_ade20k/upernet_beit-base_8x2_640x640_160k_ade20k-eead221d.pth
# UPerNet + BEiT-B/16, ADE20K 640x640: 20x20 centres after layer 4.
_base_ = './upernet_beit-b16_expedite-a4-28x28_ade20k-640x640.py'
model = dict(backbone=dict(cluster_grid=(20, 20)))
