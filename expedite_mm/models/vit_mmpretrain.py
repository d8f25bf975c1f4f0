"""``ExpeditedVisionTransformer``: mmpretrain's ``VisionTransformer`` for classification.

Token clustering as Expedit-SWAG runs it on ImageNet (cluster only: the class token is
read from the centres), optionally with reconstruction as for dense prediction, or EViT /
ToMe as Expedit-SWAG ran them (tokens reduced inside several layers). ``docs/method.md``
§4.4.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mmpretrain_compat import import_stock
from ..core import CLASSIFICATION_VIT, ExpediteMixin, GridTokens
from ..ops.layerwise import LayerwiseTokenDropping
from ..ops.reducers import attention_guide

VisionTransformer = import_stock("mmpretrain.models.backbones.vision_transformer").VisionTransformer


def layer_attention(attention: nn.Module, x: Tensor, key_size: Optional[Tensor] = None,
                    probabilities: bool = False, keys: bool = False
                    ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """mmpretrain's ``MultiheadAttention`` computed from its own submodules, with what
    EViT/ToMe need from it.

    x (B, L, C): the normed tokens; key_size (B, L): with it, ``log(size)`` of every key
    is added to the logits (ToMe's proportional attention). Returns the attention output
    (B, L, C) as the module computes it (projection, dropouts, layer scale, v shortcut),
    the probabilities (B, heads, L, L) if ``probabilities`` and the keys averaged over
    heads (B, L, C / heads) if ``keys``.
    """
    B, L, _ = x.shape
    heads, dims = attention.num_heads, attention.head_dims
    q, k, v = attention.qkv(x).reshape(B, L, 3, heads, dims).permute(2, 0, 3, 1, 4)
    logits = (q * dims ** -0.5) @ k.transpose(-2, -1)
    if key_size is not None:
        logits = logits + key_size.log()[:, None, None, :].to(logits.dtype)
    probs = logits.softmax(dim=-1)
    dropped = F.dropout(probs, attention.attn_drop, training=attention.training)
    out = (dropped @ v).transpose(1, 2).reshape(B, L, attention.embed_dims)
    out = attention.out_drop(attention.gamma1(attention.proj_drop(attention.proj(out))))
    if attention.v_shortcut:
        out = v.squeeze(1) + out
    return out, probs if probabilities else None, k.mean(dim=1) if keys else None


class ClassificationTokens(GridTokens):
    """mmpretrain ``VisionTransformer``: ``num_extra_tokens`` extra tokens, then the patch
    tokens; ``ln1`` after the last layer; the stock ``_format_output``."""

    @property
    def extra_tokens(self) -> int:
        return self.model.num_extra_tokens

    def embed(self, inputs: Tensor):
        vit = self.model
        x, hw = vit.patch_embed(inputs)
        if vit.cls_token is not None:
            x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + vit.resize_pos_embed(vit.pos_embed, vit.patch_resolution, hw,
                                     mode=vit.interpolate_mode,
                                     num_extra_tokens=vit.num_extra_tokens)
        return vit.pre_norm(vit.drop_after_pos(x)), hw

    def too_small(self, hw):
        return None if self.model.layerwise is not None else super().too_small(hw)

    def after_layer(self, index: int, x: Tensor) -> Tensor:
        vit = self.model
        return vit.ln1(x) if index == len(vit.layers) - 1 and vit.final_norm else x

    def guide(self, x: Tensor) -> dict:
        """Class-token attention / keys of layer alpha + 1 (its ln1 and q/k projections)."""
        layer = self.model.layers[self.model.cluster_after]
        qkv = layer.attn.qkv
        return attention_guide(layer.ln1(x), qkv.weight, qkv.bias, layer.attn.num_heads,
                               self.model.clustering.needs, self.model.cls_token is not None)

    def output(self, x: Tensor, hw):
        return self.model._format_output(x, hw)

    def output_on_centres(self, x: Tensor, state):
        return self.output(x, state.hw)    # clustering only: the class token (cls_token)


class LayerwiseTokens(ClassificationTokens):
    """EViT / ToMe inside the layers (``layerwise_reducer``): a reducing layer is the stock
    layer computed from its submodules with the reduction between attention and MLP; ToMe's
    token sizes are handed from layer to layer within one forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.size: Optional[Tensor] = None        # tokens held by every token (ToMe)

    def layer(self, index: int, layer: nn.Module, x: Tensor, state) -> Tensor:
        reducer = self.model.layerwise
        dropping = isinstance(reducer, LayerwiseTokenDropping)
        proportional = not dropping and reducer.proportional_attention and self.size is not None
        acts = reducer.acts_in(index)
        if not (acts or proportional):
            return layer(x)
        out, probs, keys = layer_attention(layer.attn, layer.ln1(x),
                                           key_size=self.size if proportional else None,
                                           probabilities=acts and dropping,
                                           keys=acts and not dropping)
        x = x + out
        if acts and dropping:
            x = reducer(x, probs)
        elif acts:
            if self.size is None:
                self.size = x.new_ones(x.shape[:2], dtype=torch.float32)
            x, self.size = reducer(x, keys, self.size, index)
        return layer.ffn(layer.ln2(x), identity=x)


class ExpeditedVisionTransformerMixin(ExpediteMixin):
    """Token clustering, or EViT/ToMe, in an mmpretrain ``VisionTransformer`` (or a
    subclass: DeiT III) for classification (``docs/method.md`` §4.4).

    Takes every ``VisionTransformer`` argument, with the same state-dict keys, plus the
    expedite arguments of :data:`~expedite_mm.core.args.CLASSIFICATION_VIT`:

    * ``cluster_after=a, cluster_grid=(h, w)``: the tokens are clustered after the a-th
      layer (Expedit-SWAG's ``clustering_location`` a; τ defaults to its 1). With
      ``reconstruct=False`` (default) the remaining layers and the final norm run on the
      centres and the class token is read from them (``out_type='cls_token'`` only); with
      ``reconstruct=True`` the tokens are restored after ``reconstruct_after`` and every
      ``out_type`` is at full resolution, as in the dense backbones. ``reducer=`` picks a
      baseline at the same place and budget (AvgPool, EViT, ToMe; the class-token
      attention / keys come from layer ``a + 1``).
    * ``layerwise_reducer=dict(type='EViT'|'ToMe', ...)``: EViT (tokens dropped inside
      given layers) or ToMe (r tokens merged inside every layer, proportional attention)
      as Expedit-SWAG ran them; the reducing layers are computed from the layers' own
      submodules (:func:`layer_attention`), the others run as they are.

    Disabled (neither set), the forward is the stock one, bit for bit.
    """

    expedite_family = CLASSIFICATION_VIT
    adapter = ClassificationTokens
    #: the adapter with ``layerwise_reducer`` (EViT / ToMe inside the layers)
    layerwise_adapter = LayerwiseTokens

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        depth = len(self.layers)
        self._setup_expedite(depth, self.expedite_args.grid.cluster_grid, what="layers")
        self.layerwise = self.expedite_args.build_layerwise(depth)
        if self.layerwise is not None:
            self.adapter = self.layerwise_adapter
        clusters_only = self.clustering is not None and self.reconstruct_after is None
        if (clusters_only or self.layerwise is not None) and self.out_type != "cls_token":
            what = "clustering only (reconstruct=False)" if clusters_only else "layerwise_reducer"
            raise ValueError(f"out_type={self.out_type!r} needs every patch token, which "
                             f"{what} does not keep; use out_type='cls_token' or cluster "
                             f"with reconstruct=True")
        self._check_class_token(self.cls_token is not None)

    @property
    def expedited(self) -> bool:
        return self.clustering is not None or self.layerwise is not None

    def forward(self, inputs: Tensor) -> Tuple:
        result = self._expedited_outputs(inputs, self.out_indices) if self.expedited else None
        return super().forward(inputs) if result is None else tuple(result[0])


class ExpeditedVisionTransformer(ExpeditedVisionTransformerMixin, VisionTransformer):
    """mmpretrain's ``VisionTransformer`` with token clustering, or EViT/ToMe, for
    classification (:class:`ExpeditedVisionTransformerMixin`)."""


__all__ = ["ExpeditedVisionTransformer", "ExpeditedVisionTransformerMixin",
           "ClassificationTokens", "LayerwiseTokens",
           "layer_attention"]
