# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/twins/twins_svt-l_uperhead_8x2_512x512_160k_ade20k/twins_svt-l_uperhead_8x2_512x512_160k_ade20k_20211130_141005-3e2cae61.pth
# Twins SVT-L + UPerNet on ADE20K 512x512, expedited in the third of its four stages (18
# of its 24 blocks, a 1/16 map: 32x32 tokens): token clustering after block 8 into 0.7 of
# the map's side (22x22 centres), blocks 9-18 run on the centres laid out as their grid
# (window attention over windows of the centres' grid, global attention on its reduced
# map), token reconstruction restores the stage's full map; the other stages are stock
# (ExpeditedSVT, docs/method.md §4.8). Written by `expedite-mm expedite` with its default
# rule (5/12 of 18 -> 8; a12 = 2 + 2 + 8). Not in the paper or its releases. Measured
# (fvcore at 512x512): whole model 297.24 -> 280.59 GFLOPs (ratio 0.944), backbone 84.89 -> 68.24 (0.804); the
# UPerNet head dominates. Accuracy: not measured (the checkpoint cannot be downloaded here).
_base_ = 'mmseg::twins/twins_svt-l_uperhead_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='ExpeditedSVT', cluster_grid=0.7, cluster_after=8))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/twins/twins_svt-l_uperhead_8x2_512x512_160k_ade20k/twins_svt-l_uperhead_8x2_512x512_160k_ade20k_20211130_141005-3e2cae61.pth'
