# Checkpoint: https://download.openmmlab.com/mmsegmentation/v0.5/segformer/segformer_mit-b5_640x640_160k_ade20k/segformer_mit-b5_640x640_160k_ade20k_20210801_121243-41d2845b.pth
# SegFormer MiT-B5 on ADE20K (whole images, short side 640), expedited in the third of its
# four stages (40 of its 52 blocks, a 1/16 map: 40x40 tokens at 640x640): token clustering
# after block 17 into 0.7 of the map's side (28x28 centres at 640x640), blocks 18-40 and
# the stage's norm run on the centres laid out as their grid (the attention's spatial
# reduction and the Mix-FFN's depthwise convolution on the 28x28 map), token
# reconstruction restores the stage's full map; the other stages are stock (ExpeditedMiT,
# docs/method.md §4.8). cluster_after=17 is `expedite-mm expedite`'s default rule (5/12 of
# 40); counted over all blocks, as config names count, a26 (3 + 6 + 17).
# Not in the paper or its releases: no published numbers to compare with. Measured
# (fvcore at 640x640, `expedite-mm flops CONFIG --shape 640 640`): whole model 126.37 ->
# 97.68 GFLOPs (ratio 0.773), backbone 117.72 -> 89.03 (0.756). Accuracy: not measured
# (the ADE20K checkpoint cannot be downloaded here).
_base_ = 'mmseg::segformer/segformer_mit-b5_8xb2-160k_ade20k-640x640.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='ExpeditedMiT', stage=2, cluster_after=17, cluster_grid=0.7))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/segformer/segformer_mit-b5_640x640_160k_ade20k/segformer_mit-b5_640x640_160k_ade20k_20210801_121243-41d2845b.pth'
