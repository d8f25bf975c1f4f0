# UPerNet + BEiT-B/16, ADE20K 640x640: 20x20 centres after layer 4.
_base_ = './upernet_beit-b16_expedite-a4-28x28_ade20k-640x640.py'
model = dict(backbone=dict(cluster_grid=(20, 20)))
