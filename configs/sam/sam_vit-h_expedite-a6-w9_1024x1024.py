# Checkpoint: https://download.openmmlab.com/mmclassification/v1/vit_sam/vit-huge-p16_sam-pre_3rdparty_sa1b-1024px_20230411-3f13c653.pth
# SAM's ViT-H/16 image encoder expedited without fine-tuning, Expedit-SAM's fastest
# setting (its README: clustering location 6, 81 clusters; automatic mask generation with
# 144 points on a V100: 1.27 -> 1.89 images/s; no accuracy figure published).
_base_ = './sam_vit-h_1024x1024.py'

model = dict(
    backbone=dict(
        type='ExpeditedViTSAM',
        # hourglass_clustering_location 6: clustering before the 7th layer, i.e. after 6
        cluster_after=6,
        # hourglass_num_cluster 81: every 14x14 window becomes 9x9 centres; the windowed
        # layers after clustering attend within windows of 9, the global layers over the
        # whole map of centres, and every window is reconstructed to 14x14 after the last
        # layer, before the neck
        clustered_window_size=9,
        # the scripts' defaults: cluster window 5, 5 iterations, k 20, temperature 5e-3 (a
        # multiplier of the distances: tau = 200; the encoder class's own default, which
        # its demo app.py uses, is 0.01, tau = 100)
        cluster_window=5,
        cluster_iters=5,
        temperature=200.0,
        reconstruct_k=20,
        # Not our defaults, but what the released code computes, so that its results are
        # reproduced (docs/method.md §2): L2-normalised reconstruction weights and ties with
        # the k-th weight kept (padding centres of the border windows tie exactly).
        reconstruct_normalize='l2',
        reconstruct_ties='keep'))
