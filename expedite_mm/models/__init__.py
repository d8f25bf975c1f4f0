"""Registered backbone wrappers, for each OpenMMLab package that is installed.

Importing this module (``expedite_mm.register_all_modules()``, or a config's
``custom_imports=dict(imports=['expedite_mm'])``) registers
``ExpeditedViT``, ``ExpeditedBEiT``, ``ExpeditedMAE``, ``ExpeditedSwin`` and
``ExpeditedEncoderDecoder`` (the segmentor of the logits placement) into mmseg's
``MODELS`` when mmseg is installed, with DPT's modules (:mod:`expedite_mm.dpt`) and the
accuracy benchmark's dataset (:mod:`expedite_mm.benchmark`);
``ExpeditedSwin`` into mmdet's, ``ExpeditedVisionTransformer`` (classification) into
mmpretrain's, and ``ExpeditedSwinV2``, ``ExpeditedViTSAM`` and ``SAMImageEncoder`` into
mmdet's and mmseg's when mmpretrain is there too; a package that is not installed is
skipped. Without torchvision, mmpretrain's registries are made usable for our configs
first (:mod:`expedite_mm.compat.mmpretrain`). A package that is installed but fails to
import raises, so a broken environment is not silently ignored.
"""
import importlib.util

from ..core import ExpediteArgs, ExpediteMixin

REGISTERED = {}

if importlib.util.find_spec("mmseg") is not None:
    from . import beit, segmentor, vit  # noqa: F401
    from .. import dpt  # noqa: F401  (DPT: hybrid backbone, depth head, KITTI, metric)
    from .. import benchmark  # noqa: F401  (the accuracy benchmark's DigitScenes dataset)
    from .swin import register_in as _register_swin
    REGISTERED["mmseg"] = ["ExpeditedViT", "ExpeditedBEiT", "ExpeditedMAE",
                           "ExpeditedEncoderDecoder", *_register_swin("mmseg"),
                           "HybridViT", "ExpeditedHybridViT",
                           "DPTDepthHead", "KITTIDepthDataset", "KBCrop", "MonoDepthMetric",
                           "DigitScenesDataset", "LoadCheckedAnnotations"]

if importlib.util.find_spec("mmdet") is not None:
    from .swin import register_in as _register_swin
    REGISTERED.setdefault("mmdet", []).extend(_register_swin("mmdet"))

if importlib.util.find_spec("mmpretrain") is not None:
    from ..compat.mmpretrain import prepare as _prepare_mmpretrain
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

__all__ = ["ExpediteArgs", "ExpediteMixin", "REGISTERED"]
