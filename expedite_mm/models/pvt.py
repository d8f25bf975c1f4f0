"""``ExpeditedPVT``: mmdet's ``PyramidVisionTransformer`` (PVT v1) with token clustering in
one stage (``pyramid.py``; ``docs/method.md`` §4.8)."""
from typing import Sequence, Tuple

from mmdet.models.backbones.pvt import AbsolutePositionEmbedding, PyramidVisionTransformer
from torch import nn

from .pyramid import PyramidExpediteMixin


class PVTStagesMixin(PyramidExpediteMixin):
    """PVT's stages may start with an absolute position embedding (``use_abs_pos_embed``):
    it runs before the blocks, on every token, and is not counted as a block."""

    @staticmethod
    def split_blocks(steps: Sequence[nn.Module]) -> Tuple[Sequence[nn.Module],
                                                          Sequence[nn.Module]]:
        first = 1 if len(steps) and isinstance(steps[0], AbsolutePositionEmbedding) else 0
        return list(steps)[:first], list(steps)[first:]


class ExpeditedPVT(PVTStagesMixin, PyramidVisionTransformer):
    """mmdet's ``PyramidVisionTransformer`` that runs blocks ``cluster_after+1 ..
    reconstruct_after`` of stage ``stage`` on a grid of cluster centres: every stock
    argument and state-dict key, plus the expedite arguments of
    :class:`~expedite_mm.models.pyramid.PyramidExpediteMixin`."""


__all__ = ["ExpeditedPVT", "PVTStagesMixin"]
