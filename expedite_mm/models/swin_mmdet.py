"""``ExpeditedSwin`` in mmdet's registry: mmdet's ``SwinTransformer`` + window clustering."""
from mmdet.models.backbones import SwinTransformer
from mmdet.registry import MODELS

from .swin import SwinExpediteMixin


@MODELS.register_module()
class ExpeditedSwin(SwinExpediteMixin, SwinTransformer):
    __doc__ = SwinExpediteMixin.__doc__
