"""Registered backbone wrappers, for each OpenMMLab package that is installed.

Importing this module (``expedite_mm.register_all_modules()``, or a config's
``custom_imports=dict(imports=['expedite_mm'])``) registers
``ExpeditedViT``, ``ExpeditedSwin`` and ``ExpeditedEncoderDecoder`` (the segmentor of the
logits placement) into mmseg's ``MODELS`` when mmseg is installed, ``ExpeditedSwin`` into
mmdet's, ``ExpeditedVisionTransformer`` (classification) into mmpretrain's, and
``ExpeditedSwinV2``, ``ExpeditedViTSAM`` and ``SAMImageEncoder`` into mmdet's and mmseg's
when mmpretrain is there too; a package that is not installed is skipped. Without
torchvision, mmpretrain's registries are made usable for our configs first
(:mod:`expedite_mm.models.mmpretrain_compat`). A package that is installed but
fails to import raises, so a broken environment is not silently ignored.
"""
import importlib.util

from .expedite import (ClassificationExpediteArgs, ExpediteArgs, ExpediteMixin,
                       WindowExpediteArgs, WindowViTExpediteArgs)

REGISTERED = {}

if importlib.util.find_spec("mmseg") is not None:
    from . import dpt_head, hybrid_vit, segmentor, swin_mmseg, vit  # noqa: F401
    from .. import datasets, evaluation  # noqa: F401  (DPT depth: KITTI, DPT's protocol)
    REGISTERED["mmseg"] = ["ExpeditedViT", "ExpeditedEncoderDecoder", "ExpeditedSwin",
                           "HybridViT", "ExpeditedHybridViT",
                           "DPTDepthHead", "KITTIDepthDataset", "KBCrop", "MonoDepthMetric"]

if importlib.util.find_spec("mmdet") is not None:
    from . import swin_mmdet  # noqa: F401  (ExpeditedSwin in mmdet's MODELS)
    REGISTERED.setdefault("mmdet", []).append("ExpeditedSwin")

if importlib.util.find_spec("mmpretrain") is not None:
    from .mmpretrain_compat import prepare as _prepare_mmpretrain
    _stand_ins = _prepare_mmpretrain()          # [] with torchvision installed
    from .vit_mmpretrain import register as _register_classification
    REGISTERED["mmpretrain"] = _register_classification() + _stand_ins
    # ExpeditedSwinV2 and ExpeditedViTSAM (+ SAMImageEncoder): classes on mmpretrain's
    # backbones, registered (with the stock classes) for the detection/segmentation
    # packages that are installed
    from .swinv2 import register_in as _register_swinv2
    from .vit_sam import register_in as _register_vit_sam
    for _package in ("mmdet", "mmseg"):
        if importlib.util.find_spec(_package) is not None:
            REGISTERED.setdefault(_package, []).extend(_register_swinv2(_package))
            REGISTERED[_package].extend(_register_vit_sam(_package))

__all__ = ["ExpediteArgs", "WindowExpediteArgs", "ClassificationExpediteArgs",
           "WindowViTExpediteArgs", "ExpediteMixin",
           "REGISTERED"]
