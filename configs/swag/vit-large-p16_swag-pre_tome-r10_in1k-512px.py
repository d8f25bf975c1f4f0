# Checkpoint: checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_l_16_swag-4f3808c9.pth checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
# SWAG ViT-L/16 ImageNet-1k 512x512 (32x32 tokens) with ToMe as Expedit-SWAG ran it (its
# ToMe patch for SWAG, training-free): in every layer, between attention and MLP, 10 tokens
# are merged by bipartite soft matching on the layer's keys (the class token is never
# merged), with proportional attention (log token size added to the attention logits)
# (docs/method.md §4.4).
# Published (Expedit-SWAG README): 317.5 GFLOPs, 13.8 FPS, 88.0 top-1;
# baseline 364.8 GFLOPs, 12.7 FPS, 88.1 top-1.
_base_ = './vit-large-p16_swag-pre_3rdparty_in1k-512px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        layerwise_reducer=dict(type='ToMe', r=10, proportional_attention=True)))
