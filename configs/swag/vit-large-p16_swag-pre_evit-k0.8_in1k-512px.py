# Checkpoint: checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_l_16_swag-4f3808c9.pth checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
# SWAG ViT-L/16 ImageNet-1k 512x512 (32x32 tokens) with EViT as Expedit-SWAG ran it
# (models/evit.py, training-free): in layers 7, 13 and 19 (its 0-based drop_loc (6, 12, 18),
# the model's default) the tokens are ranked after the attention and ceil(0.8 n) of the n
# non-class tokens are kept for the MLP and the later layers; the dropped ones are fused
# into one token weighted by their scores (the model's default; the release does not record
# whether its rows fused). The score is what the release computes: the attention a token
# receives, averaged over heads and over all queries (docs/method.md §4.4).
# Published (Expedit-SWAG README): 264.9 GFLOPs, 17.4 FPS, 87.9 top-1;
# baseline 364.8 GFLOPs, 12.7 FPS, 88.1 top-1.
_base_ = './vit-large-p16_swag-pre_3rdparty_in1k-512px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        layerwise_reducer=dict(
            type='EViT', keep_rate=0.8, layers=(7, 13, 19), fuse_token=True,
            score='mean_attention')))
