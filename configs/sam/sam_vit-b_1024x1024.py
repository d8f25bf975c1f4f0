# Checkpoint: https://download.openmmlab.com/mmclassification/v1/vit_sam/vit-base-p16_sam-pre_3rdparty_sa1b-1024px_20230411-2320f9cc.pth
# SAM's image encoder, ViT-B/16 (12 layers, global attention in layers 3, 6, 9, 12; the
# others attend within 14x14 windows) at SAM's 1024x1024 input: mmpretrain's headless SAM
# config, with the official SAM weights converted by mmpretrain. mmpretrain's
# ImageClassifier cannot be built without torchvision, so the encoder is wrapped in
# SAMImageEncoder (expedite_mm.models.vit_sam): SAM's preprocessing (mean/std, BGR -> RGB,
# the normalised image zero-padded at the bottom/right to 1024x1024; resize the long side
# to 1024 first) and the encoder, whose output is SAM's image embedding (256 x 64 x 64).
_base_ = 'mmpretrain::sam/vit-base-p16_sam_headless.py'
# Built in mmseg's scope: `import expedite_mm` registers SAMImageEncoder and
# (Expedited)ViTSAM in mmseg's MODELS; mmpretrain's own scope would make its registry
# import mmpretrain.models, which needs torchvision (README: mmpretrain without torchvision).
default_scope = 'mmseg'
custom_imports = dict(imports=['expedite_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='SAMImageEncoder',
    backbone={{_base_.model.backbone}},
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1024))

# mmpretrain's conversion of the official SAM ViT-B/16 weights (keys backbone.*), loaded
# unmodified
load_from = 'https://download.openmmlab.com/mmclassification/v1/vit_sam/vit-base-p16_sam-pre_3rdparty_sa1b-1024px_20230411-2320f9cc.pth'  # noqa
