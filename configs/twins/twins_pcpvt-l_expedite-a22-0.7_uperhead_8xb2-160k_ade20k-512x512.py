# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/twins/twins_pcpvt-l_uperhead_8x2_512x512_160k_ade20k/twins_pcpvt-l_uperhead_8x2_512x512_160k_ade20k_20211201_075053-c6095c07.pth
# Twins PCPVT-L + UPerNet on ADE20K 512x512, expedited in the third of its four stages (27
# of its 41 blocks, a 1/16 map: 32x32 tokens): token clustering after block 11 into 0.7 of
# the map's side (22x22 centres), blocks 12-27 run on the centres laid out as their grid
# (the attention's spatial reduction on the 22x22 map), token reconstruction restores the
# stage's full map; the other stages are stock (ExpeditedPCPVT, docs/method.md §4.8).
# Written by `expedite-mm expedite` with its default rule (5/12 of 27 -> 11; a22 = 3 + 8 +
# 11). Not in the paper or its releases. Measured (fvcore at 512x512): whole model 269.12 -> 257.32
# GFLOPs (ratio 0.956), backbone 58.29 -> 46.49 (0.798); the UPerNet head dominates. Accuracy: not
# measured (the checkpoint cannot be downloaded here).
_base_ = 'mmseg::twins/twins_pcpvt-l_uperhead_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='ExpeditedPCPVT', cluster_grid=0.7, cluster_after=11))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/twins/twins_pcpvt-l_uperhead_8x2_512x512_160k_ade20k/twins_pcpvt-l_uperhead_8x2_512x512_160k_ade20k_20211201_075053-c6095c07.pth'
