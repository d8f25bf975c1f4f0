# Checkpoint: https://download.openmmlab.com/mmdetection/v2.0/pvt/retinanet_pvt-m_fpn_1x_coco/retinanet_pvt-m_fpn_1x_coco_20210831_103243-55effa1b.pth
# RetinaNet PVT-M (v1) on COCO (800x1333), expedited in the third of its four stages (18
# of its 28 blocks, a 1/16 map: 50x83 tokens at 800x1333): token clustering after block 8
# into 0.7 of the map's side (35x58 centres), blocks 9-18 run on the centres laid out as
# their grid (the attention's spatial reduction on the smaller map; the stage's absolute
# position embedding runs before its blocks, on every token), token reconstruction
# restores the stage's full map; the other stages are stock (ExpeditedPVT,
# docs/method.md §4.8). Written by `expedite-mm expedite` with its default rule (5/12 of
# 18 -> 8; a15 = 3 + 4 + 8). Not in the paper or its releases. Measured (fvcore at
# 800x1333, backbone only): 232.40 -> 190.19 GFLOPs (ratio 0.818). Accuracy: not measured
# (the checkpoint cannot be downloaded here).
_base_ = 'mmdet::pvt/retinanet_pvt-m_fpn_1x_coco.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='ExpeditedPVT', cluster_grid=0.7, cluster_after=8))
load_from = 'https://download.openmmlab.com/mmdetection/v2.0/pvt/retinanet_pvt-m_fpn_1x_coco/retinanet_pvt-m_fpn_1x_coco_20210831_103243-55effa1b.pth'
