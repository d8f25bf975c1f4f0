"""``ExpeditedViT``: mmseg's ``VisionTransformer`` with token clustering/reconstruction."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from torch import Tensor

from ..ops.reducers import KeepState, attention_guide
from .expedite import ExpediteMixin


@MODELS.register_module()
class ExpeditedViT(ExpediteMixin, VisionTransformer):
    """mmseg's ``VisionTransformer`` that runs layers ``cluster_after+1 .. reconstruct_after``
    on cluster centres instead of all patch tokens (``docs/method.md``, ViT).

    Takes every ``VisionTransformer`` argument, with the same state-dict keys, plus the
    expedite arguments of :class:`~expedite_mm.models.expedite.ExpediteArgs`
    (``cluster_after``, ``reconstruct_after``, ``cluster_grid``, ``cluster_window``,
    ``cluster_iters``, ``temperature``, ``reconstruct_k``, ``reconstruct_normalize``,
    ``reconstruct_neighbours``, ``reconstruct_ties``, ``reducer``, ``reconstructor``).

    Every output in ``out_indices`` comes back at full resolution; one taken inside the
    clustered span is reconstructed with the same weights. The class token passes
    through the clustered layers untouched by clustering. With ``reducer=dict(type=
    'EViT')`` tokens are scored by the class-token attention of layer
    ``cluster_after + 1`` (its own norm and q/k projections applied to the tokens
    entering it); ToMe matches on that layer's keys averaged over heads.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_expedite(len(self.layers), self.expedite_args.cluster_grid, what="layers")
        if "cls_attention" in getattr(self.clustering, "needs", ()) and not self.with_cls_token:
            raise ValueError("reducer=dict(type='EViT') scores tokens by the class token's "
                             "attention, but with_cls_token=False; set reducer.score='norm' "
                             "(token-norm proxy) or use another reducer")

    def forward(self, inputs: Tensor) -> Tuple:
        if not self.expedited:
            return super().forward(inputs)
        B = inputs.shape[0]
        x, hw = self.patch_embed(inputs)
        if not self._can_expedite(hw):
            return super().forward(inputs)
        # Embedding exactly as the stock forward.
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = self._pos_embeding(x, hw, self.pos_embed)
        if not self.with_cls_token:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.pre_ln(x)

        outs: List = []
        if self.out_origin:
            outs.append(self._output(x, hw))
        state = None
        last = len(self.layers) - 1
        if self.cluster_after == 0:
            x, state = self._cluster_tokens(x, hw)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == last and self.final_norm:
                x = self.norm1(x)
            if i + 1 == self.reconstruct_after:
                if i == last and self.final_norm and isinstance(state, KeepState):
                    state = state.map_fill(self.norm1)  # tokens that skipped the span
                x, state = self._reconstruct_tokens(x, state), None
            if i in self.out_indices:
                full = x if state is None else self._reconstruct_tokens(x, state)
                outs.append(self._output(full, hw))
            if i + 1 == self.cluster_after:
                x, state = self._cluster_tokens(x, hw)
        return tuple(outs)

    def _split(self, x: Tensor) -> Tuple[Optional[Tensor], Tensor]:
        return (x[:, :1], x[:, 1:]) if self.with_cls_token else (None, x)

    def _join(self, cls: Optional[Tensor], tokens: Tensor) -> Tensor:
        return tokens if cls is None else torch.cat((cls, tokens), dim=1)

    def _cluster_tokens(self, x: Tensor, hw: Tuple[int, int]):
        cls, tokens = self._split(x)
        centers, state = self.clustering(tokens, hw, **self._reduction_guide(x))
        return self._join(cls, centers), state

    def _reduction_guide(self, x: Tensor) -> dict:
        """What the reducer needs besides the tokens (class-token attention, keys), from
        the first layer after clustering applied to all tokens x (B, [1 +] N, C)."""
        needs = getattr(self.clustering, "needs", ())
        if not needs:
            return {}
        layer = self.layers[self.cluster_after]
        attention = layer.attn.attn                      # torch nn.MultiheadAttention
        return attention_guide(layer.norm1(x), attention.in_proj_weight,
                               attention.in_proj_bias, attention.num_heads, needs,
                               self.with_cls_token)

    def _reconstruct_tokens(self, x: Tensor, state) -> Tensor:
        cls, centers = self._split(x)
        return self._join(cls, self.reconstruction(centers, state))

    def _output(self, x: Tensor, hw: Tuple[int, int]):
        """Full-resolution tokens (B, 1+N, C) -> the stock output format."""
        cls, tokens = self._split(x)
        out = tokens.reshape(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()
        return [out, x[:, 0]] if self.output_cls_token else out
