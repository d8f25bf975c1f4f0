# Checkpoint: checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_h_14_swag-80465313.pth checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
# SWAG ViT-H/14 ImageNet-1k 518x518 (37x37 tokens) with ToMe as Expedit-SWAG ran it (its
# ToMe patch for SWAG, training-free): in every layer, between attention and MLP, 40 tokens
# are merged by bipartite soft matching on the layer's keys (the class token is never
# merged), with proportional attention (log token size added to the attention logits)
# (docs/method.md §4.4).
# Published (Expedit-SWAG README): 516.9 GFLOPs, 9.2 FPS, 88.2 top-1;
# baseline 1023.2 GFLOPs, 5.0 FPS, 88.5 top-1.
_base_ = './vit-huge-p14_swag-pre_3rdparty_in1k-518px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        layerwise_reducer=dict(type='ToMe', r=40, proportional_attention=True)))
