"""Deprecated import paths, kept for one release (removed in expedite-mm 0.3).

Each old module is a shim of a few lines: importing it warns (``DeprecationWarning``)
and puts the module's new home in its place in ``sys.modules``, so every name -- and a
``monkeypatch`` of one -- is the new module's. CHANGELOG.md lists the moves.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

#: old module -> its new home
MOVED = {
    "expedite_mm.utils.agreement": "expedite_mm.analysis.agreement",
    "expedite_mm.utils.benchmark": "expedite_mm.analysis.latency",
    "expedite_mm.utils.checkpoint": "expedite_mm.apis.checkpoint",
    "expedite_mm.utils.compat": "expedite_mm.compat",
    "expedite_mm.utils.config": "expedite_mm.apis.config",
    "expedite_mm.utils.convert": "expedite_mm.apis.convert",
    "expedite_mm.utils.deploy": "expedite_mm.apis.deploy",
    "expedite_mm.utils.downsample": "expedite_mm.analysis.downsample",
    "expedite_mm.utils.flops": "expedite_mm.analysis.flops",
    "expedite_mm.utils.settings": "expedite_mm.analysis.settings",
    "expedite_mm.dpt.bit_resnet": "expedite_mm.models.dpt.bit_resnet",
    "expedite_mm.dpt.head": "expedite_mm.models.dpt.head",
    "expedite_mm.dpt.hybrid_vit": "expedite_mm.models.dpt.hybrid_vit",
    "expedite_mm.dpt.kitti": "expedite_mm.datasets.kitti",
    "expedite_mm.dpt.metric": "expedite_mm.evaluation.depth_metric",
    "expedite_mm.benchmark.digit_scenes": "expedite_mm.datasets.digit_scenes",
}


def moved(old: str) -> ModuleType:
    """Warn that ``old`` moved, and make its new home answer for it (``sys.modules``)."""
    new = MOVED[old]
    warnings.warn(f"{old} moved to {new}; the old path is removed in expedite-mm 0.3",
                  DeprecationWarning, stacklevel=3)
    module = importlib.import_module(new)
    sys.modules[old] = module
    return module


__all__ = ["MOVED", "moved"]
