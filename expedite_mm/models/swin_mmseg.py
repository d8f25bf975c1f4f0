"""``ExpeditedSwin`` in mmseg's registry: mmseg's ``SwinTransformer`` + window clustering."""
from mmseg.models.backbones import SwinTransformer
from mmseg.registry import MODELS

from .swin import SwinExpediteMixin


@MODELS.register_module()
class ExpeditedSwin(SwinExpediteMixin, SwinTransformer):
    __doc__ = SwinExpediteMixin.__doc__
