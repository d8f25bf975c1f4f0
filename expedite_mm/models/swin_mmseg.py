"""``ExpeditedSwin`` in mmseg: mmseg's own ``SwinTransformer`` with window token clustering in
one stage. Everything but the two stock base classes is shared (``swin.py``)."""
from mmseg.models.backbones.swin import SwinBlockSequence, SwinTransformer

from .swin import SwinStageMixin, WindowExpediteMixin


class ExpeditedSwinBlockSequenceSeg(SwinStageMixin, SwinBlockSequence):
    """mmseg's Swin stage, expedited (replaces the stock stage at build time)."""


class ExpeditedSwinSeg(WindowExpediteMixin, SwinTransformer):
    """Registered as ``ExpeditedSwin`` in mmseg's ``MODELS``: every stock argument and
    state-dict key, plus the expedite arguments of ``WINDOWED_STAGE`` (``WindowExpediteMixin``)."""

    expedited_stage_class = ExpeditedSwinBlockSequenceSeg


__all__ = ["ExpeditedSwinSeg", "ExpeditedSwinBlockSequenceSeg"]
