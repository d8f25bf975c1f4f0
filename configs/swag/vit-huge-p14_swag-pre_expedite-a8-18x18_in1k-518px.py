# Checkpoint: checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_h_14_swag-80465313.pth checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
# SWAG ViT-H/14 ImageNet-1k 518x518 (37x37 tokens), expedited as Expedit-SWAG runs it: token
# clustering after layer 8 into 18x18 centres; layers 9-32 and the final norm run on the
# centres and the class token is read from them (no reconstruction). Expedit-SWAG's alpha=8
# ("-l 8 -n 324"): its ImageNet models cluster before the 0-based block 8, i.e. after 8
# layers (docs/method.md §4.4). Its clustering settings: window 5, 5 iterations, temperature
# 1 (its factor cluster_temperture=1).
# Published (Expedit-SWAG README): 422.7 GFLOPs, 11.2 FPS, 87.4 top-1;
# baseline 1023.2 GFLOPs, 5.0 FPS, 88.5 top-1.
_base_ = './vit-huge-p14_swag-pre_3rdparty_in1k-518px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        cluster_after=8,
        cluster_grid=(18, 18),
        cluster_window=5,
        cluster_iters=5,
        temperature=1.0,
        reconstruct=False))
