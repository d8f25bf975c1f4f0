"""``ExpeditedViT``: mmseg's ``VisionTransformer`` with token clustering/reconstruction."""
from __future__ import annotations

from typing import ClassVar, List, Optional, Tuple

import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from torch import Tensor

from ..ops.cluster import ClusterState
from ..ops.reducers import KeepState, attention_guide
from .expedite import ExpediteMixin


@MODELS.register_module()
class ExpeditedViT(ExpediteMixin, VisionTransformer):
    """mmseg's ``VisionTransformer`` that runs layers ``cluster_after+1 .. reconstruct_after``
    on cluster centres instead of all patch tokens (``docs/method.md``, ViT).

    Takes every ``VisionTransformer`` argument, with the same state-dict keys, plus the
    expedite arguments of :class:`~expedite_mm.models.expedite.ExpediteArgs`
    (``cluster_after``, ``reconstruct_after``, ``reconstruct_placement``, ``cluster_grid``,
    ``cluster_window``, ``cluster_iters``, ``temperature``, ``reconstruct_k``,
    ``reconstruct_normalize``, ``reconstruct_neighbours``, ``reconstruct_ties``,
    ``reducer``, ``reconstructor``).

    With ``reconstruct_placement='backbone'`` (default) every output in ``out_indices``
    comes back at full resolution; one taken inside the clustered span is reconstructed
    with the same weights. With ``'logits'`` (Expedit-Segmenter's released computation)
    the backbone never reconstructs: :meth:`forward_with_state` returns the ``h x w``
    centre maps and the clustering state, ``ExpeditedEncoderDecoder`` reconstructs the
    decode head's logits with :meth:`reconstruct_map`, and plain :meth:`forward` refuses.
    The class token passes through the clustered layers untouched by clustering. With
    ``reducer=dict(type='EViT')`` tokens are scored by the class-token attention of layer
    ``cluster_after + 1`` (its own norm and q/k projections applied to the tokens
    entering it); ToMe matches on that layer's keys averaged over heads.
    """

    #: whether ``reconstruct_placement='logits'`` is possible (a head reading one map)
    logits_placement_supported: ClassVar[bool] = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_expedite(len(self.layers), self.expedite_args.cluster_grid, what="layers")
        if "cls_attention" in getattr(self.clustering, "needs", ()) and not self.with_cls_token:
            raise ValueError("reducer=dict(type='EViT') scores tokens by the class token's "
                             "attention, but with_cls_token=False; set reducer.score='norm' "
                             "(token-norm proxy) or use another reducer")
        if self.expedited and self.expedite_args.reconstruct_placement == "logits":
            self._check_logits_placement()
            self.reconstruct_after = None          # never inside the backbone

    def _check_logits_placement(self) -> None:
        name = type(self).__name__
        if not self.logits_placement_supported:
            raise ValueError(f"reconstruct_placement='logits' is not available for {name}: its "
                             f"head reads several taps at full resolution; use 'backbone'")
        before = [i for i in self.out_indices if i < self.cluster_after]
        if before or self.out_origin:
            raise ValueError(f"with reconstruct_placement='logits' every output is the h x w "
                             f"centre map, so out_indices must all be >= cluster_after="
                             f"{self.cluster_after} (0-based layers after clustering) and "
                             f"out_origin False; got out_indices={list(self.out_indices)}, "
                             f"out_origin={self.out_origin}")

    @property
    def reconstructs_logits(self) -> bool:
        """Whether the outputs stay on the centre map for the segmentor to reconstruct the
        head's logits (expedited with ``reconstruct_placement='logits'``)."""
        return self.expedited and self.expedite_args.reconstruct_placement == "logits"

    def forward(self, inputs: Tensor) -> Tuple:
        if self.reconstructs_logits:
            raise RuntimeError(
                f"{type(self).__name__} with reconstruct_placement='logits' returns centre maps "
                f"that only the segmentor can reconstruct (after its decode head): build it in "
                f"model=dict(type='ExpeditedEncoderDecoder', ...), or call forward_with_state()")
        return self.forward_with_state(inputs)[0]

    def forward_with_state(self, inputs: Tensor) -> Tuple[Tuple, Optional[ClusterState]]:
        """The outputs and what the segmentor needs to reconstruct from them.

        Returns ``(outputs, state)``. With ``reconstruct_placement='logits'`` (and an input
        that clusters) every output is the ``(B, C, h, w)`` centre map after the last
        layers and the final norm, and ``state`` is the clustering state for
        :meth:`reconstruct_map`; otherwise the outputs are the full-resolution ones of
        :meth:`forward` and ``state`` is None. Nothing is kept on the module.
        """
        if not self.expedited:
            return super().forward(inputs), None
        B = inputs.shape[0]
        x, hw = self.patch_embed(inputs)
        if not self._can_expedite(hw):
            return super().forward(inputs), None
        # Embedding exactly as the stock forward.
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = self._pos_embeding(x, hw, self.pos_embed)
        if not self.with_cls_token:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.pre_ln(x)

        on_centres = self.reconstructs_logits
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
                if state is None:
                    outs.append(self._output(x, hw))
                elif on_centres:
                    outs.append(self._output(x, state.grid))
                else:
                    outs.append(self._output(self._reconstruct_tokens(x, state), hw))
            if i + 1 == self.cluster_after:
                x, state = self._cluster_tokens(x, hw)
        # in-backbone placement: reconstructed at reconstruct_after <= depth, state is None
        return tuple(outs), state

    def reconstruct_map(self, maps: Tensor, state: ClusterState) -> Tensor:
        """Token reconstruction of any per-centre map, e.g. the decode head's logits.

        Args:
            maps: (B, K, h, w) values on the centre map of ``state`` (any K channels).
            state: the clustering state :meth:`forward_with_state` returned.

        Returns:
            (B, K, H, W) on the token grid, each token the weighted sum of its centres'
            values (the weights of the backbone's reconstruction: from the tokens before
            clustering and the centres after the EM).
        """
        B, K = maps.shape[:2]
        if tuple(maps.shape[2:]) != tuple(state.grid):
            raise ValueError(f"a map of size {tuple(maps.shape[2:])} does not lie on the "
                             f"{tuple(state.grid)} centre map: the decode head must keep the "
                             f"resolution of its input")
        tokens = self.reconstruction(maps.flatten(2).transpose(1, 2), state)    # (B, N, K)
        # contiguous: a (B, K, H, W) view of the (B, N, K) tokens would be channels-last,
        # and so would everything after it (the resize, slide accumulation: 2x slower)
        return tokens.transpose(1, 2).reshape(B, K, *state.hw).contiguous()

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
        """Tokens (B, [1 +] H*W, C) of an ``hw`` grid (the token grid, or the centre map
        with the logits placement) -> the stock output format."""
        cls, tokens = self._split(x)
        out = tokens.reshape(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()
        return [out, x[:, 0]] if self.output_cls_token else out
