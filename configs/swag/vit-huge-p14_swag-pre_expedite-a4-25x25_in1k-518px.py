# Checkpoint: checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
#   made by: python tools/model_converters/swag2mmpretrain.py https://download.pytorch.org/models/vit_h_14_swag-80465313.pth checkpoints/vit-huge-p14_swag-pre_3rdparty_in1k-518px.pth
# SWAG ViT-H/14 ImageNet-1k 518x518 (37x37 tokens), expedited as Expedit-SWAG runs it: token
# clustering after layer 4 into 25x25 centres; layers 5-32 and the final norm run on the
# centres and the class token is read from them (no reconstruction). Expedit-SWAG's alpha=4
# ("-l 4 -n 625"): its ImageNet models cluster before the 0-based block 4, i.e. after 4
# layers (docs/method.md §4.4). Its clustering settings: window 5, 5 iterations, temperature
# 1 (its factor cluster_temperture=1).
# Published (Expedit-SWAG README): 514.1 GFLOPs, 9.8 FPS, 87.6 top-1;
# baseline 1023.2 GFLOPs, 5.0 FPS, 88.5 top-1.
_base_ = './vit-huge-p14_swag-pre_3rdparty_in1k-518px.py'
model = dict(
    backbone=dict(
        type='ExpeditedVisionTransformer',
        cluster_after=4,
        cluster_grid=(25, 25),
        cluster_window=5,
        cluster_iters=5,
        temperature=1.0,
        reconstruct=False))
