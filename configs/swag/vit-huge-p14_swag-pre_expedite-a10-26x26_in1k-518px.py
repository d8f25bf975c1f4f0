# Checkpoint: checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_h_14_swag-80465313.pth checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
# SWAG ViT-H/14 ImageNet-1k 518x518 (37x37 tokens), expedited as Expedit-SWAG runs it: token
# clustering after layer 10 into 26x26 centres; layers 11-32 and the final norm run on the
# centres and the class token is read from them (no reconstruction). Expedit-SWAG's alpha=10
# ("-l 10 -n 676"): its ImageNet models cluster before the 0-based block 10, i.e. after 10
# layers (docs/method.md §4.4). Its clustering settings: window 5, 5 iterations, temperature
# 1 (its factor cluster_temperture=1).
# Published (Expedit-SWAG README): 652.4 GFLOPs, 7.4 FPS, 88.4 top-1;
# baseline 1023.2 GFLOPs, 5.0 FPS, 88.5 top-1.
_base_ = './vit-huge-p14_swag-pre_3rdparty_in1k-518px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        cluster_after=10,
        cluster_grid=(26, 26),
        cluster_window=5,
        cluster_iters=5,
        temperature=1.0,
        reconstruct=False))
