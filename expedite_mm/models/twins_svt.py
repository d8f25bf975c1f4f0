"""``ExpeditedSVT``: mmseg's Twins ``SVT`` with token clustering in one stage
(``twins.py``, ``pyramid.py``; ``docs/method.md`` §4.8)."""
from mmseg.models.backbones.twins import SVT

from .twins import TwinsExpediteMixin


class ExpeditedSVT(TwinsExpediteMixin, SVT):
    """mmseg's Twins ``SVT`` that runs blocks ``cluster_after+1 .. reconstruct_after`` of
    stage ``stage`` on a grid of cluster centres (its window attention over the centres'
    grid): every stock argument and state-dict key, plus the expedite arguments of
    :class:`~expedite_mm.models.pyramid.PyramidExpediteMixin`."""


__all__ = ["ExpeditedSVT"]
