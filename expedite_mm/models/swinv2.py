"""``ExpeditedSwinV2``: mmpretrain's ``SwinTransformerV2`` + window clustering.

One class on mmpretrain's backbone, registered into mmdet's and mmseg's ``MODELS`` (see
``expedite_mm.models``) so detection/segmentation configs name it like any backbone. The
window clustering and the stage's loop are the Swin ones
(:class:`~expedite_mm.models.swin.WindowExpediteMixin`, the hourglass loop with the
``SwinStageTokens`` window adapter); what differs is SwinV2's block (post-norm, scaled
cosine attention), its continuous position bias and its stage layout.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mmpretrain_compat import import_stock
from .swin import ExpeditedStageMixin, WindowExpediteMixin, checkpointed
from .window_attention import (attend_windows, crop_coords_table, relative_position_index,
                               shifted_window_attention)

STOCK_MODULE = "mmpretrain.models.backbones.swin_transformer_v2"
_stock = import_stock(STOCK_MODULE)   # tolerates a missing torchvision only
SwinTransformerV2, SwinBlockV2Sequence = _stock.SwinTransformerV2, _stock.SwinBlockV2Sequence


def window_bias_v2(w_msa: nn.Module, window_size: int) -> Tensor:
    """SwinV2's continuous position bias for window k, (heads, k*k, k*k): the block's
    ``cpb_mlp`` on window k's log-spaced coordinates (the centre of window K's table,
    normalised by the same pretrained window), indexed as SwinV2 does, ``16 sigmoid``."""
    coords = crop_coords_table(w_msa.relative_coords_table, window_size)
    table = w_msa.cpb_mlp(coords).view(-1, w_msa.num_heads)
    index = relative_position_index(window_size, table.device)
    n = window_size * window_size
    return 16 * torch.sigmoid(table[index.view(-1)].view(n, n, -1).permute(2, 0, 1))


def attend_v2(w_msa: nn.Module, windows: Tensor, bias: Tensor, mask: Optional[Tensor]) -> Tensor:
    """mmpretrain's ``WindowMSAV2`` computation (scaled cosine attention) with an explicit
    bias (heads, n, n)."""
    B_, n, C = windows.shape
    heads = w_msa.num_heads
    qkv_bias = None
    if w_msa.q_bias is not None:
        qkv_bias = torch.cat((w_msa.q_bias, torch.zeros_like(w_msa.v_bias), w_msa.v_bias))
    qkv = F.linear(windows, w_msa.qkv.weight, qkv_bias)
    q, k, v = qkv.reshape(B_, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
    attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    attn = attn * torch.clamp(w_msa.logit_scale, max=math.log(1.0 / 0.01)).exp() + bias.unsqueeze(0)
    return attend_windows(w_msa, attn, v, mask)


def swinv2_block_clustered(block: nn.Module, x: Tensor, hw: Tuple[int, int], window_size: int,
                           shift_size: int, mask_shift: int) -> Tensor:
    """An mmpretrain ``SwinBlockV2`` (post-norm) on ``hw`` with window k and its shift.

    As the stock block without ``pad_small_map``, a map no larger than the window in one
    direction is not shifted.
    """
    attention = block.attn
    if not attention.pad_small_map and min(hw) <= window_size:
        shift_size = mask_shift = 0
    w_msa = attention.w_msa

    def inner(x: Tensor) -> Tensor:
        bias = window_bias_v2(w_msa, window_size)
        y = shifted_window_attention(x, hw, window_size, shift_size,
                                     lambda windows, mask: attend_v2(w_msa, windows, bias, mask),
                                     mask_shift)
        x = x + block.norm1(attention.drop(y))
        x = x + block.norm2(block.ffn(x))
        return block.norm3(x) if block.extra_norm else x

    return checkpointed(block, inner, x)


class ExpeditedSwinBlockV2Sequence(ExpeditedStageMixin, SwinBlockV2Sequence):
    """The expedited SwinV2 stage (replaces the stock stage at build time): patch
    merging first, then the blocks."""

    clustered_block = staticmethod(swinv2_block_clustered)

    def forward(self, x: Tensor, in_shape: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
        if self.downsample:
            x, hw = self.downsample(x, in_shape)
        else:
            hw = in_shape
        out = self.expedited_blocks(x, hw)
        if out is None:   # too small to cluster: the stock loop
            out = x
            for block in self.blocks:
                out = block(out, hw)
        return out, hw


class ExpeditedSwinV2(WindowExpediteMixin, SwinTransformerV2):
    """mmpretrain's ``SwinTransformerV2`` with window token clustering in one stage.

    Takes every argument of ``SwinTransformerV2``, with the same state-dict keys (the
    official checkpoints converted by mmpretrain load unmodified), plus the expedite
    arguments of :data:`~expedite_mm.core.args.WINDOWED_STAGE` (the paper's
    SwinV2-L HTC++ setting: ``stage=2, cluster_after=8, clustered_window_size=23``).

    The clustered blocks are the stock SwinV2 blocks' computation with window k and shift
    k // 2 (for the blocks that shift): scaled-cosine attention and post-norm unchanged,
    and the continuous position bias computed by the block's own ``cpb_mlp`` -- as the
    stock forward does, on every call -- from window k's log-spaced relative coordinates,
    normalised by the same pretrained window size as window K's (by K itself where the
    model has none, i.e. the weights were trained at window K). Those coordinates are the
    centre of the stock table (:func:`~expedite_mm.models.window_attention.crop_coords_table`).

    Detection needs ``out_indices=(0, 1, 2, 3)`` (an FPN) and ``pad_small_map=True``
    (mmpretrain's default shrinks windows to small maps, as for classification).
    """

    expedited_stage_class = ExpeditedSwinBlockV2Sequence


__all__ = ["ExpeditedSwinV2", "SwinTransformerV2"]
