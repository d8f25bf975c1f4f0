# Checkpoint: https://download.openmmlab.com/mmclassification/v0/deit3/deit3-base-p16_3rdparty_in1k_20221008-60b8c8bf.pth
# DeiT III ViT-B/16 on ImageNet-1k (224x224, 14x14 tokens), expedited as the SWAG models
# are (cluster only, docs/method.md §4.4): token clustering after layer 5 into 0.7 of the
# token grid's side (10x10 centres), layers 6-12 and the final norm run on the centres and
# the class token is read from them (ExpeditedDeiT3). Written by `expedite-mm expedite`
# with its default rule (5/12 of 12 -> 5). Not in the paper or its releases. Measured
# (fvcore at 224x224): whole model 17.58 -> 12.56 GFLOPs (ratio 0.714). Accuracy: not
# measured (the checkpoint and ImageNet cannot be downloaded here).
_base_ = 'mmpretrain::deit3/deit3-base-p16_64xb64_in1k.py'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='ExpeditedDeiT3', cluster_grid=0.7, cluster_after=5))
load_from = 'https://download.openmmlab.com/mmclassification/v0/deit3/deit3-base-p16_3rdparty_in1k_20221008-60b8c8bf.pth'
