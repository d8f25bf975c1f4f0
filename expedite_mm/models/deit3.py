"""``ExpeditedDeiT3``: mmpretrain's ``DeiT3`` with token clustering for classification, as
``ExpeditedVisionTransformer`` (``vit_mmpretrain.py``, ``docs/method.md`` §4.4). DeiT III
adds its position embedding to the patch tokens before the class token joins them and has
no pre-norm; its layers (layer scale inside the attention and the FFN) run as they are."""
from __future__ import annotations

import torch
from torch import Tensor

from .mmpretrain_compat import import_stock
from .vit_mmpretrain import (ClassificationTokens, ExpeditedVisionTransformerMixin,
                             LayerwiseTokens)

_deit3 = import_stock("mmpretrain.models.backbones.deit3")


class DeiT3Tokens(ClassificationTokens):
    """DeiT III's embedding: positions on the patch tokens, then the class token."""

    def embed(self, inputs: Tensor):
        vit = self.model
        x, hw = vit.patch_embed(inputs)
        x = x + _deit3.resize_pos_embed(vit.pos_embed, vit.patch_resolution, hw,
                                        mode=vit.interpolate_mode, num_extra_tokens=0)
        x = vit.drop_after_pos(x)
        if vit.cls_token is not None:
            x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x, hw


class DeiT3LayerwiseTokens(LayerwiseTokens, DeiT3Tokens):
    """EViT / ToMe inside DeiT III's layers, after DeiT III's embedding."""


class ExpeditedDeiT3(ExpeditedVisionTransformerMixin, _deit3.DeiT3):
    """mmpretrain's ``DeiT3`` with the arguments and forward of
    :class:`~expedite_mm.models.vit_mmpretrain.ExpeditedVisionTransformer` (its state-dict
    keys; disabled, the stock forward bit for bit)."""

    adapter = DeiT3Tokens
    layerwise_adapter = DeiT3LayerwiseTokens


__all__ = ["ExpeditedDeiT3", "DeiT3Tokens", "DeiT3LayerwiseTokens"]
