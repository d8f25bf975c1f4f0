"""``ExpeditedSwin`` in mmdet: mmdet's own ``SwinTransformer`` with window token clustering in
one stage. Everything but the two stock base classes is shared (``swin.py``)."""
from mmdet.models.backbones.swin import SwinBlockSequence, SwinTransformer

from .swin import SwinStageMixin, WindowExpediteMixin


class ExpeditedSwinBlockSequenceDet(SwinStageMixin, SwinBlockSequence):
    """mmdet's Swin stage, expedited (replaces the stock stage at build time)."""


class ExpeditedSwinDet(WindowExpediteMixin, SwinTransformer):
    """Registered as ``ExpeditedSwin`` in mmdet's ``MODELS``: every stock argument and
    state-dict key, plus the expedite arguments of ``WINDOWED_STAGE`` (``WindowExpediteMixin``)."""

    expedited_stage_class = ExpeditedSwinBlockSequenceDet


__all__ = ["ExpeditedSwinDet", "ExpeditedSwinBlockSequenceDet"]
