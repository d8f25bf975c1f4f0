# Checkpoint: https://download.openmmlab.com/mmdetection/v2.0/pvt/retinanet_pvtv2-b5_fpn_1x_coco/retinanet_pvtv2-b5_fpn_1x_coco_20210902_201800-3420eb57.pth
# RetinaNet PVTv2-B5 on COCO (800x1333), expedited in the third of its four stages (40 of
# its 52 blocks, a 1/16 map: 50x84 tokens at 800x1333): token clustering after block 17
# into 0.7 of the map's side (35x59 centres), blocks 18-40 run on the centres laid out as
# their grid (spatial reduction and the FFN's depthwise convolution on the smaller map),
# token reconstruction restores the stage's full map; the other stages are stock
# (ExpeditedPVTv2, docs/method.md §4.8). Written by `expedite-mm expedite` with its
# default rule (5/12 of 40 -> 17; a26 = 3 + 6 + 17). Not in the paper or its releases.
# Measured (fvcore at 800x1333, backbone only): 412.72 -> 307.64 GFLOPs (ratio 0.745). Accuracy: not
# measured (the checkpoint cannot be downloaded here).
_base_ = 'mmdet::pvt/retinanet_pvtv2-b5_fpn_1x_coco.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='ExpeditedPVTv2', cluster_grid=0.7, cluster_after=17))
load_from = 'https://download.openmmlab.com/mmdetection/v2.0/pvt/retinanet_pvtv2-b5_fpn_1x_coco/retinanet_pvtv2-b5_fpn_1x_coco_20210902_201800-3420eb57.pth'
