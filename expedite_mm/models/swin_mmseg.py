"""``ExpeditedSwin`` in mmseg's registry: mmseg's ``SwinTransformer`` + window clustering."""
from mmseg.models.backbones import SwinTransformer
from mmseg.models.backbones.swin import SwinBlockSequence
from mmseg.registry import MODELS

from .swin import SwinExpediteMixin, SwinStageMixin


class ExpeditedSwinBlockSequence(SwinStageMixin, SwinBlockSequence):
    """The expedited stage (its class is swapped for this one at build time)."""


@MODELS.register_module()
class ExpeditedSwin(SwinExpediteMixin, SwinTransformer):
    __doc__ = SwinExpediteMixin.__doc__
    expedited_stage_class = ExpeditedSwinBlockSequence
