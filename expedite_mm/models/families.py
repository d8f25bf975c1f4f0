"""The family table: every expedited backbone family, described once.

A row says which stock backbone a family expedites (its type name and the package that
defines it), into which OpenMMLab registries its class is registered and where that class
lives (one ``module:Class`` per registry: mmseg's and mmdet's Swin are two classes on two
stock classes), what else goes into those registries with it, and its kind for the tuner.
Registration (:mod:`expedite_mm.registration`), the config helpers
(:func:`expedite_mm.apis.config.as_expedited`), the tuner
(:mod:`expedite_mm.analysis.autotune`) and the docs read it; nothing else lists families.

Adding a family: its adapter module (``class Expedited<X>(ExpediteMixin, <stock X>)`` with
a :class:`~expedite_mm.core.hourglass.TokenAdapter`), one row here, its configs and its
tests (``docs/development.md``). Plain data: importing this imports no OpenMMLab package.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

#: the tuner's kinds: which reducer families it searches and how it counts a layer's cost
KINDS = ("vit", "window", "sam", "classification", "pyramid")


@dataclass(frozen=True)
class Family:
    """One expedited backbone family.

    Args:
        name: the registered type of the expedited backbone (what configs write).
        stock: the stock backbone type it expedites (what stock configs write).
        stock_package: the package that defines the stock class (``'expedite_mm'`` for
            DPT's ``HybridViT``, which the project itself provides).
        classes: registry package -> ``'module:Class'`` of the expedited class registered
            there under ``name``.
        kind: the tuner's kind (:data:`KINDS`).
        also_registers: ``'module:Class'`` registered beside it in the same registries
            where the name is free (mmpretrain's stock class, so that mmdet/mmseg configs
            name it without mmengine's scoped lookup; SAM's image-encoder wrapper).
        cost_outside_layer: part of a clustered layer's cost is computed by the backbone
            outside the layer's module (BEiT's relative position bias on the centres); the
            tuner's FLOP model counts it there.
    """

    name: str
    stock: str
    stock_package: str
    classes: Mapping[str, str]
    kind: str
    also_registers: Tuple[str, ...] = ()
    cost_outside_layer: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def registries(self) -> Tuple[str, ...]:
        """The packages whose ``MODELS`` hold this family."""
        return tuple(self.classes)

    def needs(self, registry: str) -> Tuple[str, ...]:
        """The packages that must be installed to register this family in ``registry``."""
        return tuple(dict.fromkeys(p for p in (registry, self.stock_package)
                                   if p and p != "expedite_mm"))

    def installed(self, registry: str) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.needs(registry))

    def expedited_class(self, registry: str) -> type:
        """The class registered in ``registry`` (imports its module, and so the stock one)."""
        return load(self.classes[registry])


def load(path: str) -> type:
    """``'package.module:Name'`` -> the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


_M = "expedite_mm.models."

FAMILIES: Tuple[Family, ...] = (
    Family("ExpeditedViT", "VisionTransformer", "mmseg",
           {"mmseg": _M + "vit:ExpeditedViT"}, kind="vit"),
    Family("ExpeditedBEiT", "BEiT", "mmseg",
           {"mmseg": _M + "beit:ExpeditedBEiT"}, kind="vit", cost_outside_layer=True),
    Family("ExpeditedMAE", "MAE", "mmseg",
           {"mmseg": _M + "beit:ExpeditedMAE"}, kind="vit", cost_outside_layer=True),
    Family("ExpeditedHybridViT", "HybridViT", "expedite_mm",
           {"mmseg": _M + "dpt.hybrid_vit:ExpeditedHybridViT"}, kind="vit"),
    Family("ExpeditedSwin", "SwinTransformer", "",   # each registry's own stock Swin
           {"mmseg": _M + "swin_mmseg:ExpeditedSwinSeg",
            "mmdet": _M + "swin_mmdet:ExpeditedSwinDet"}, kind="window"),
    Family("ExpeditedSwinV2", "SwinTransformerV2", "mmpretrain",
           {"mmdet": _M + "swinv2:ExpeditedSwinV2", "mmseg": _M + "swinv2:ExpeditedSwinV2",
            "mmpretrain": _M + "swinv2:ExpeditedSwinV2"},
           kind="window", also_registers=(_M + "swinv2:SwinTransformerV2",)),
    Family("ExpeditedViTSAM", "ViTSAM", "mmpretrain",
           {"mmdet": _M + "vit_sam:ExpeditedViTSAM", "mmseg": _M + "vit_sam:ExpeditedViTSAM",
            "mmpretrain": _M + "vit_sam:ExpeditedViTSAM"},
           kind="sam", also_registers=(_M + "vit_sam:SAMImageEncoder", _M + "vit_sam:ViTSAM")),
    Family("ExpeditedMiT", "MixVisionTransformer", "mmseg",
           {"mmseg": _M + "mit:ExpeditedMiT"}, kind="pyramid"),
    Family("ExpeditedPCPVT", "PCPVT", "mmseg",
           {"mmseg": _M + "twins:ExpeditedPCPVT"}, kind="pyramid"),
    Family("ExpeditedSVT", "SVT", "mmseg",
           {"mmseg": _M + "twins_svt:ExpeditedSVT"}, kind="pyramid"),
    Family("ExpeditedPVT", "PyramidVisionTransformer", "mmdet",
           {"mmdet": _M + "pvt:ExpeditedPVT"}, kind="pyramid"),
    Family("ExpeditedPVTv2", "PyramidVisionTransformerV2", "mmdet",
           {"mmdet": _M + "pvtv2:ExpeditedPVTv2"}, kind="pyramid"),
    Family("ExpeditedVisionTransformer", "VisionTransformer", "mmpretrain",
           {"mmpretrain": _M + "vit_mmpretrain:ExpeditedVisionTransformer"},
           kind="classification"),
    Family("ExpeditedDeiT3", "DeiT3", "mmpretrain",
           {"mmpretrain": _M + "deit3:ExpeditedDeiT3"}, kind="classification"),
    Family("ExpeditedDistilledViT", "DistilledVisionTransformer", "mmpretrain",
           {"mmpretrain": _M + "deit:ExpeditedDistilledViT"}, kind="classification"),
)

BY_NAME: Dict[str, Family] = {family.name: family for family in FAMILIES}


def stock_package(family: Family, registry: str) -> str:
    """The package whose stock class ``family`` subclasses in ``registry``'s class."""
    return family.stock_package or registry


def find(stock: str, package: str, scope: str) -> Optional[Family]:
    """The family that expedites stock type ``stock`` of ``package`` in a ``scope`` config
    (the registry the config builds from), if any. A type only mmpretrain (or this
    project) defines counts as that package's whatever prefix the config gave it."""
    for family in FAMILIES:
        if family.stock == stock and scope in family.registries and \
                stock_package(family, scope) in (package, "mmpretrain", "expedite_mm"):
            return family
    return None


__all__ = ["Family", "FAMILIES", "BY_NAME", "KINDS", "find", "load", "stock_package"]
