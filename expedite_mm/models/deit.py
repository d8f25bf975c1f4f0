"""``ExpeditedDistilledViT``: mmpretrain's ``DistilledVisionTransformer`` (DeiT with its
distillation token) with token clustering for classification, as
``ExpeditedVisionTransformer`` (``vit_mmpretrain.py``, ``docs/method.md`` §4.4). Its two
extra tokens (class, distillation) are kept aside while the patch tokens are clustered;
both are read from the last layer, as the stock model returns them."""
from __future__ import annotations

import torch
from torch import Tensor

from ..ops.reducers import GRID_REDUCERS
from .mmpretrain_compat import import_stock
from .vit_mmpretrain import ClassificationTokens, ExpeditedVisionTransformerMixin

DistilledVisionTransformer = import_stock(
    "mmpretrain.models.backbones.deit").DistilledVisionTransformer


class DistilledTokens(ClassificationTokens):
    """DeiT's embedding: class and distillation tokens, then the patches, positions for
    all; no pre-norm."""

    def embed(self, inputs: Tensor):
        vit = self.model
        x, hw = vit.patch_embed(inputs)
        extra = (vit.cls_token.expand(x.shape[0], -1, -1),
                 vit.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat((*extra, x), dim=1)
        x = x + vit.resize_pos_embed(vit.pos_embed, vit.patch_resolution, hw,
                                     mode=vit.interpolate_mode,
                                     num_extra_tokens=vit.num_extra_tokens)
        return vit.drop_after_pos(x), hw


class ExpeditedDistilledViT(ExpeditedVisionTransformerMixin, DistilledVisionTransformer):
    """mmpretrain's ``DistilledVisionTransformer`` with the clustering of
    :class:`~expedite_mm.models.vit_mmpretrain.ExpeditedVisionTransformer` (its state-dict
    keys; disabled, the stock forward bit for bit). The method and AvgPool only: EViT and
    ToMe (one-shot or inside the layers) assume one class token."""

    adapter = DistilledTokens

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.layerwise is not None or self.reducer_type not in (None, *GRID_REDUCERS):
            raise ValueError(f"reducer / layerwise_reducer: {type(self).__name__} takes the "
                             f"method or reducer=dict(type='AvgPool') only (EViT and ToMe "
                             f"assume one class token; DeiT adds a distillation token)")


__all__ = ["ExpeditedDistilledViT", "DistilledTokens"]
