"""``ExpeditedMiT``: mmseg's ``MixVisionTransformer`` (SegFormer's MiT encoder) with token
clustering in one stage (``pyramid.py``; ``docs/method.md`` §4.8)."""
from mmseg.models.backbones import MixVisionTransformer

from .pyramid import PyramidExpediteMixin


class ExpeditedMiT(PyramidExpediteMixin, MixVisionTransformer):
    """mmseg's ``MixVisionTransformer`` that runs blocks ``cluster_after+1 ..
    reconstruct_after`` of stage ``stage`` on a grid of cluster centres.

    Takes every ``MixVisionTransformer`` argument, with the same state-dict keys, plus the
    expedite arguments of :class:`~expedite_mm.models.pyramid.PyramidExpediteMixin`
    (``stage`` default 2: 40 of MiT-B5's 52 blocks).
    """


__all__ = ["ExpeditedMiT"]
