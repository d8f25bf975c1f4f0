"""mmpretrain's backbone modules, imported without importing ``mmpretrain.models``.

``mmpretrain.models`` imports its heads after its backbones, and through them all of
mmpretrain's metrics, one of which imports torchvision (mmpretrain 1.2.0). Without
torchvision that package import fails once the backbones are complete; a backbone module
is all the expedited backbones need, so that one failure is tolerated (any other is
raised). For the same reason mmpretrain's registry cannot build models here: its first
lookup imports ``mmpretrain.models``. So the stock classes are registered into the
detection / segmentation packages' registries (:func:`register_in`), and the backbones
whose layers look their norm layers up in mmpretrain's registry (``ViTSAM``) are built
inside :func:`building`.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType
from typing import Iterator, List


def import_stock_module(name: str) -> ModuleType:
    """The mmpretrain module ``name`` (e.g. ``mmpretrain.models.backbones.vit_sam``)."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        module = sys.modules.get(name)
        if module is None or (error.name or "").split(".")[0] != "torchvision":
            raise
    return module


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Build mmpretrain modules inside this context when ``mmpretrain.models`` cannot be
    imported: their lookups in mmpretrain's registry (e.g. its ``build_norm_layer``) then
    skip that failing import and find what is registered -- mmpretrain's imported modules
    and, through the parent registry, mmcv's layers. Restores the registry's state after;
    does nothing when ``mmpretrain.models`` is importable."""
    registry = importlib.import_module("mmpretrain.registry").MODELS
    if "mmpretrain.models" in sys.modules or registry._imported:
        yield
        return
    registry._imported = True
    try:
        yield
    finally:
        registry._imported = False


def register_in(package: str, modules: List[type], stock: List[type]) -> List[str]:
    """Register ``modules``, and the ``stock`` mmpretrain classes where their names are
    free, in ``package``'s ``MODELS`` (e.g. mmdet, mmseg); returns the names registered.

    The stock classes are registered so that stock configs build without mmengine's
    scoped ``'mmpretrain.X'`` lookup, which imports all of ``mmpretrain.models``.
    """
    registry = importlib.import_module(f"{package}.registry").MODELS
    names = []
    for cls in modules:
        registry.register_module(module=cls)
        names.append(cls.__name__)
    for cls in stock:
        if registry.get(cls.__name__) is None:
            registry.register_module(module=cls)
            names.append(cls.__name__)
    return names


__all__ = ["import_stock_module", "building", "register_in"]
