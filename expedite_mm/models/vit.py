"""``ExpeditedViT``: mmseg's ``VisionTransformer`` with token clustering/reconstruction,
and what every segmentation ViT shares (:class:`SegmentationViTMixin`: the two
reconstruct placements, ``forward_with_state``, ``reconstruct_map``)."""
from __future__ import annotations

from typing import ClassVar, Optional, Tuple

import torch
from mmseg.models.backbones import VisionTransformer
from torch import Tensor

from ..core import ExpediteMixin, GridTokens
from ..ops.cluster import ClusterState
from ..ops.reducers import REDUCERS, attention_guide


class ViTTokens(GridTokens):
    """mmseg ``VisionTransformer``: [class token,] H*W patch tokens; ``norm1`` after the
    last layer (``final_norm``); outputs ``(B, C, H, W)`` [, class token]."""

    @property
    def extra_tokens(self) -> int:
        return int(self.model.with_cls_token)

    def embed(self, inputs: Tensor):
        vit = self.model
        x, hw = vit.patch_embed(inputs)
        x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = vit._pos_embeding(x, hw, vit.pos_embed)
        if not vit.with_cls_token:
            x = x[:, 1:]
        return (vit.pre_ln(x) if vit.pre_norm else x), hw

    def after_layer(self, index: int, x: Tensor) -> Tensor:
        vit = self.model
        return vit.norm1(x) if index == len(vit.layers) - 1 and vit.final_norm else x

    def guide(self, x: Tensor) -> dict:
        """Class-token attention / keys of layer alpha + 1 (its norm and q/k projections)."""
        layer = self.model.layers[self.model.cluster_after]
        attention = layer.attn.attn                      # torch nn.MultiheadAttention
        return attention_guide(layer.norm1(x), attention.in_proj_weight,
                               attention.in_proj_bias, attention.num_heads,
                               self.model.clustering.needs, self.model.with_cls_token)

    def output(self, x: Tensor, hw: Tuple[int, int]):
        _, tokens = self.split(x)
        out = tokens.reshape(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()
        return [out, x[:, 0]] if self.model.output_cls_token else out


class SegmentationViTMixin(ExpediteMixin):
    """The expedited forward of an mmseg ViT (``ExpeditedViT``, ``ExpeditedBEiT``, ...).

    With ``reconstruct_placement='backbone'`` (default) every output in ``out_indices``
    comes back at full resolution; one taken inside the clustered span is reconstructed
    with the same weights. With ``'logits'`` (Expedit-Segmenter's released computation)
    the backbone never reconstructs: :meth:`forward_with_state` returns the ``h x w``
    centre maps and the clustering state, ``ExpeditedEncoderDecoder`` reconstructs the
    decode head's logits with :meth:`reconstruct_map`, and plain :meth:`forward` refuses.
    Class tokens pass through the clustered layers untouched by clustering.
    """

    #: whether ``reconstruct_placement='logits'`` is possible (a head reading one map)
    logits_placement_supported: ClassVar[bool] = True
    #: the reducer types it can run (EViT/ToMe keep no grid of tokens)
    allowed_reducers: ClassVar[Tuple[str, ...]] = tuple(REDUCERS)
    out_origin: bool = False

    def _setup_segmentation(self) -> None:
        self._setup_expedite(len(self.layers), self.expedite_args.grid.cluster_grid,
                             allowed_reducers=self.allowed_reducers)
        self._check_class_token(bool(self.adapter(self).extra_tokens))
        if self.reconstructs_logits:
            self._check_logits_placement()

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
        return self.expedited and self.expedite_args.on_logits

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
        result = self._expedited_outputs(inputs, self.out_indices, self.out_origin) \
            if self.expedited else None
        if result is None:
            return super().forward(inputs), None
        outs, state = result
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


class ExpeditedViT(SegmentationViTMixin, VisionTransformer):
    """mmseg's ``VisionTransformer`` that runs layers ``cluster_after+1 .. reconstruct_after``
    on cluster centres instead of all patch tokens (``docs/method.md`` §4.1).

    Takes every ``VisionTransformer`` argument, with the same state-dict keys, plus the
    expedite arguments (:data:`~expedite_mm.core.args.DENSE_VIT`: ``cluster_after``,
    ``reconstruct_after``, ``reconstruct_placement``, ``cluster_grid``, ``cluster_window``,
    ``cluster_iters``, ``temperature``, ``reconstruct_k``, ``reconstruct_normalize``,
    ``reconstruct_neighbours``, ``reconstruct_ties``, ``reducer``, ``reconstructor``); see
    :class:`SegmentationViTMixin` for the placements. With ``reducer=dict(type='EViT')``
    tokens are scored by the class-token attention of layer ``cluster_after + 1`` (its own
    norm and q/k projections applied to the tokens entering it); ToMe matches on that
    layer's keys averaged over heads.
    """

    adapter = ViTTokens

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_segmentation()


__all__ = ["ExpeditedViT", "SegmentationViTMixin", "ViTTokens"]
