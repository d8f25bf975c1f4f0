# Checkpoint: checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_l_16_swag-4f3808c9.pth checkpoints/vit-large-p16_swag-pre_3rdparty_in1k-512px.pth
# SWAG ViT-L/16 ImageNet-1k 512x512 (32x32 tokens), expedited as Expedit-SWAG runs it: token
# clustering after layer 8 into 16x16 centres; layers 9-24 and the final norm run on the
# centres and the class token is read from them (no reconstruction). Expedit-SWAG's alpha=8
# ("-l 8 -n 256"): its ImageNet models cluster before the 0-based block 8, i.e. after 8
# layers (docs/method.md §4.4). Its clustering settings: window 5, 5 iterations, temperature
# 1 (its factor cluster_temperture=1).
# Published (Expedit-SWAG README): 179.0 GFLOPs, 23.3 FPS, 87.2 top-1;
# baseline 364.8 GFLOPs, 12.7 FPS, 88.1 top-1.
_base_ = './vit-large-p16_swag-pre_3rdparty_in1k-512px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        cluster_after=8,
        cluster_grid=(16, 16),
        cluster_window=5,
        cluster_iters=5,
        temperature=1.0,
        reconstruct=False))
