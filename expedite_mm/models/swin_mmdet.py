"""``ExpeditedSwin`` in mmdet's registry: mmdet's ``SwinTransformer`` + window clustering."""
from mmdet.models.backbones import SwinTransformer
from mmdet.models.backbones.swin import SwinBlockSequence
from mmdet.registry import MODELS

from .swin import SwinExpediteMixin, SwinStageMixin


class ExpeditedSwinBlockSequence(SwinStageMixin, SwinBlockSequence):
    """The expedited stage (its class is swapped for this one at build time)."""


@MODELS.register_module()
class ExpeditedSwin(SwinExpediteMixin, SwinTransformer):
    __doc__ = SwinExpediteMixin.__doc__
    expedited_stage_class = ExpeditedSwinBlockSequence
