# Checkpoint: checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_h_14_swag-80465313.pth checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
# SWAG ViT-H/14 ImageNet-1k 518x518 (37x37 tokens) with EViT as Expedit-SWAG ran it
# (models/evit.py, training-free): in layers 9, 17 and 25 (its 0-based drop_loc (8, 16, 24),
# the model's default) the tokens are ranked after the attention and ceil(0.5 n) of the n
# non-class tokens are kept for the MLP and the later layers; the dropped ones are fused
# into one token weighted by their scores (the model's default; the release does not record
# whether its rows fused). The score is what the release computes: the attention a token
# receives, averaged over heads and over all queries (docs/method.md §4.4).
# Published (Expedit-SWAG README): 472.0 GFLOPs, 10.3 FPS, 88.0 top-1;
# baseline 1023.2 GFLOPs, 5.0 FPS, 88.5 top-1.
_base_ = './vit-huge-p14_swag-pre_3rdparty_in1k-518px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        layerwise_reducer=dict(
            type='EViT', keep_rate=0.5, layers=(9, 17, 25), fuse_token=True,
            score='mean_attention')))
