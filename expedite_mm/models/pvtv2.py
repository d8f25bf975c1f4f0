"""``ExpeditedPVTv2``: mmdet's ``PyramidVisionTransformerV2`` with token clustering in one
stage (``pyramid.py``; ``docs/method.md`` §4.8)."""
from mmdet.models.backbones.pvt import PyramidVisionTransformerV2

from .pvt import PVTStagesMixin


class ExpeditedPVTv2(PVTStagesMixin, PyramidVisionTransformerV2):
    """mmdet's ``PyramidVisionTransformerV2`` that runs blocks ``cluster_after+1 ..
    reconstruct_after`` of stage ``stage`` on a grid of cluster centres: every stock
    argument and state-dict key, plus the expedite arguments of
    :class:`~expedite_mm.models.pyramid.PyramidExpediteMixin`."""


__all__ = ["ExpeditedPVTv2"]
