"""The method's forward, once for every family: the expedite arguments
(:mod:`~expedite_mm.core.args`), the loop and the adapter interface families plug into
(:mod:`~expedite_mm.core.hourglass`) and the backbone mixin (:mod:`~expedite_mm.core.backbone`).
Pure torch, like :mod:`expedite_mm.ops`."""
from .args import (CLASSIFICATION_VIT, DENSE_VIT, GRID_STAGE, WINDOWED_STAGE, WINDOWED_VIT,
                   ArgsFamily, ExpediteArgs)
from .backbone import ExpediteMixin
from .hourglass import GridTokens, TokenAdapter, WindowTokens, run_hourglass

__all__ = ["ExpediteArgs", "ArgsFamily", "DENSE_VIT", "CLASSIFICATION_VIT", "WINDOWED_STAGE",
           "WINDOWED_VIT", "GRID_STAGE", "ExpediteMixin", "TokenAdapter", "GridTokens", "WindowTokens",
           "run_hourglass"]
