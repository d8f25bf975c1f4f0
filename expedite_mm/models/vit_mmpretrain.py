"""``ExpeditedVisionTransformer``: mmpretrain's ``VisionTransformer`` for classification.

Token clustering as Expedit-SWAG runs it on ImageNet (cluster only: the class token is
read from the centres), optionally with reconstruction as for dense prediction, or EViT /
ToMe as Expedit-SWAG ran them (tokens reduced inside several layers). ``docs/method.md``
§4.4.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.reducers import KeepState, LayerwiseTokenDropping, attention_guide
from .expedite import ClassificationExpediteArgs, ExpediteMixin
from .mmpretrain_compat import import_stock

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


class ExpeditedVisionTransformer(ExpediteMixin, VisionTransformer):
    """mmpretrain's ``VisionTransformer`` with token clustering, or EViT/ToMe, for
    classification (``docs/method.md`` §4.4).

    Takes every ``VisionTransformer`` argument, with the same state-dict keys, plus the
    expedite arguments of :class:`~expedite_mm.models.expedite.ClassificationExpediteArgs`:

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

    expedite_args_class = ClassificationExpediteArgs

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        depth = len(self.layers)
        self._setup_expedite(depth, self.expedite_args.cluster_grid, what="layers")
        self.reconstruct = self.expedite_args.reconstruct
        self.layerwise = self.expedite_args.build_layerwise(depth)
        clusters_only = self.clustering is not None and not self.reconstruct
        if (clusters_only or self.layerwise is not None) and self.out_type != "cls_token":
            what = "clustering only (reconstruct=False)" if clusters_only else "layerwise_reducer"
            raise ValueError(f"out_type={self.out_type!r} needs every patch token, which "
                             f"{what} does not keep; use out_type='cls_token' or cluster "
                             f"with reconstruct=True")
        if "cls_attention" in getattr(self.clustering, "needs", ()) and not self.with_cls_token:
            raise ValueError("reducer=dict(type='EViT') scores tokens by the class token's "
                             "attention, but with_cls_token=False; set reducer.score='norm' "
                             "(token-norm proxy) or use another reducer")

    @property
    def expedited(self) -> bool:
        return self.clustering is not None or self.layerwise is not None

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: Tensor) -> Tuple:
        if not self.expedited:
            return super().forward(inputs)
        x, hw = self.patch_embed(inputs)
        if self.layerwise is None and not self._can_expedite(hw):
            return super().forward(inputs)
        x = self._embed(x, hw)
        if self.layerwise is not None:
            return self._forward_layerwise(x, hw)
        return self._forward_clustered(x, hw)

    def _embed(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """Patch tokens -> the first layer's input, exactly as the stock forward."""
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.resize_pos_embed(self.pos_embed, self.patch_resolution, hw,
                                      mode=self.interpolate_mode,
                                      num_extra_tokens=self.num_extra_tokens)
        return self.pre_norm(self.drop_after_pos(x))

    def _final(self, index: int, x: Tensor) -> Tensor:
        return self.ln1(x) if index == len(self.layers) - 1 and self.final_norm else x

    def _forward_clustered(self, x: Tensor, hw: Tuple[int, int]) -> Tuple:
        outs: List[Tensor] = []
        state = None
        if self.cluster_after == 0:
            x, state = self._cluster_tokens(x, hw)
        for i, layer in enumerate(self.layers):
            x = self._final(i, layer(x))
            if i + 1 == self.reconstruct_after:
                if i == len(self.layers) - 1 and self.final_norm and isinstance(state, KeepState):
                    state = state.map_fill(self.ln1)   # tokens that skipped the span
                x, state = self._reconstruct_tokens(x, state), None
            if i in self.out_indices:
                full = x if state is None or not self.reconstruct else \
                    self._reconstruct_tokens(x, state)
                outs.append(self._format_output(full, hw))
            if i + 1 == self.cluster_after:
                x, state = self._cluster_tokens(x, hw)
        return tuple(outs)

    def _forward_layerwise(self, x: Tensor, hw: Tuple[int, int]) -> Tuple:
        outs: List[Tensor] = []
        size: Optional[Tensor] = None        # tokens held by every token (ToMe)
        dropping = isinstance(self.layerwise, LayerwiseTokenDropping)
        proportional = not dropping and self.layerwise.proportional_attention
        for i, layer in enumerate(self.layers):
            if self.layerwise.acts_in(i) or (proportional and size is not None):
                x, size = self._reducing_layer(i, layer, x, size, dropping, proportional)
            else:
                x = layer(x)
            x = self._final(i, x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw))
        return tuple(outs)

    def _reducing_layer(self, index: int, layer: nn.Module, x: Tensor, size: Optional[Tensor],
                        dropping: bool, proportional: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """A ``TransformerEncoderLayer`` with the reduction between attention and MLP."""
        acts = self.layerwise.acts_in(index)
        out, probs, keys = layer_attention(layer.attn, layer.ln1(x),
                                           key_size=size if proportional else None,
                                           probabilities=acts and dropping,
                                           keys=acts and not dropping)
        x = x + out
        if acts and dropping:
            x = self.layerwise(x, probs)
        elif acts:
            if size is None:
                size = x.new_ones(x.shape[:2], dtype=torch.float32)
            x, size = self.layerwise(x, keys, size, index)
        return layer.ffn(layer.ln2(x), identity=x), size

    # ------------------------------------------------------------------ one-shot reduction
    def _split(self, x: Tensor) -> Tuple[Optional[Tensor], Tensor]:
        n = self.num_extra_tokens
        return (x[:, :n], x[:, n:]) if n else (None, x)

    def _join(self, extra: Optional[Tensor], tokens: Tensor) -> Tensor:
        return tokens if extra is None else torch.cat((extra, tokens), dim=1)

    def _cluster_tokens(self, x: Tensor, hw: Tuple[int, int]):
        extra, tokens = self._split(x)
        centers, state = self.clustering(tokens, hw, **self._reduction_guide(x))
        return self._join(extra, centers), state

    def _reduction_guide(self, x: Tensor) -> dict:
        """Class-token attention / keys for the EViT / ToMe reducers, from the first layer
        after clustering applied to all tokens x (B, [1 +] N, C)."""
        needs = getattr(self.clustering, "needs", ())
        if not needs:
            return {}
        layer = self.layers[self.cluster_after]
        qkv = layer.attn.qkv
        return attention_guide(layer.ln1(x), qkv.weight, qkv.bias, layer.attn.num_heads, needs,
                               self.with_cls_token)

    def _reconstruct_tokens(self, x: Tensor, state) -> Tensor:
        extra, centers = self._split(x)
        return self._join(extra, self.reconstruction(centers, state))


def register() -> List[str]:
    """Register :class:`ExpeditedVisionTransformer` in mmpretrain's ``MODELS``; returns the
    names registered."""
    from mmpretrain.registry import MODELS
    MODELS.register_module(module=ExpeditedVisionTransformer, force=True)
    return ["ExpeditedVisionTransformer"]


__all__ = ["ExpeditedVisionTransformer", "layer_attention", "register"]
