"""``ExpeditedBEiT`` / ``ExpeditedMAE``: mmseg's ``BEiT`` and ``MAE`` backbones with token
clustering/reconstruction (``docs/method.md`` §4.5).

Their layers add a relative position bias, one ``((2H-1)(2W-1) + 3, heads)`` table per
layer for the pre-training token grid ``H x W`` (the last three rows: class token to
patch, patch to class token, class token to itself), and scale both residual branches
(layer scale ``gamma_1``, ``gamma_2``). On the centres the bias is read for the cluster
grid: centre ``(a, b)`` sits at the centre of its cell, ``((a + 1/2) H/h - 1/2,
(b + 1/2) W/w - 1/2)`` in token units, so two centres are ``(da H/h, db W/w)`` apart and
their bias is the stock table read bilinearly at that offset (:func:`centre_bias`); the
class-token rows are kept. The dense layers are the stock ones.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.models.backbones import BEiT, MAE
from torch import Tensor, nn

from ..ops.reducers import GRID_REDUCERS
from .vit import SegmentationViTMixin, ViTTokens


def _interpolation(offsets: np.ndarray, size: int) -> np.ndarray:
    """(len(offsets), size) weights of linear interpolation at fractional positions."""
    low = np.clip(np.floor(offsets).astype(np.int64), 0, size - 1)
    high = np.minimum(low + 1, size - 1)
    fraction = offsets - low
    weights = np.zeros((len(offsets), size))
    np.add.at(weights, (np.arange(len(offsets)), low), 1 - fraction)
    np.add.at(weights, (np.arange(len(offsets)), high), fraction)
    return weights


@functools.lru_cache(maxsize=64)
def _centre_tables(hw: Tuple[int, int], window: Tuple[int, int], grid: Tuple[int, int]
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolation weights of the centre offsets in the table's rows and columns, and
    the (M, M) index of every centre pair's offset (shapes only, so cached)."""
    (H, W), (Wh, Ww), (h, w) = hw, window, grid
    rows = _interpolation(np.arange(-(h - 1), h) * H / h + (Wh - 1), 2 * Wh - 1)
    cols = _interpolation(np.arange(-(w - 1), w) * W / w + (Ww - 1), 2 * Ww - 1)
    a, b = np.divmod(np.arange(h * w), w)
    index = (a[:, None] - a[None, :] + h - 1) * (2 * w - 1) + (b[:, None] - b[None, :] + w - 1)
    return rows, cols, index


def centre_bias(attention: nn.Module, hw: Tuple[int, int], grid: Tuple[int, int]) -> Tensor:
    """A ``BEiTAttention``'s relative position bias for ``[class token, h x w centres]`` of
    an ``H x W`` token grid: ``(heads, 1 + h*w, 1 + h*w)``.

    Centres ``da, db`` cells apart are ``(da H/h, db W/w)`` tokens apart; the bias of that
    offset is the table read bilinearly (the ``(2H-1) x (2W-1)`` offsets of the window
    the layer was built for, ``attention.window_size``). Integral offsets read the table
    exactly, so ``grid == hw`` gives back the stock bias.
    """
    Wh, Ww = attention.window_size
    table = attention.relative_position_bias_table                       # (R + 3, heads)
    heads = table.shape[1]
    image = table[:-3].t().reshape(heads, 2 * Wh - 1, 2 * Ww - 1)
    rows, cols, index = _centre_tables(tuple(hw), (Wh, Ww), tuple(grid))
    rows, cols = (torch.from_numpy(m).to(table) for m in (rows, cols))
    offsets = rows @ image @ cols.t()                                     # (heads, 2h-1, 2w-1)
    patches = offsets.flatten(1)[:, torch.from_numpy(index).to(table.device)]   # (heads, M, M)
    bias = F.pad(patches, (1, 0, 1, 0))
    bias[:, 0, 1:] = table[-3, :, None]          # class token -> patches
    bias[:, 1:, 0] = table[-2, :, None]          # patches -> class token
    bias[:, 0, 0] = table[-1]
    return bias


def beit_layer(layer: nn.Module, x: Tensor, bias: Tensor) -> Tensor:
    """A ``BEiTTransformerEncoderLayer`` with an explicit relative position bias
    (heads, L, L): the stock layer's computation from its own submodules."""
    attention = layer.attn
    y = layer.norm1(x)
    B, N, C = y.shape
    if attention.bias == "qv_bias":
        qkv_bias = torch.cat((attention.q_bias, torch.zeros_like(attention.v_bias),
                              attention.v_bias))
        qkv = F.linear(y, attention.qkv.weight, qkv_bias)
    else:
        qkv = attention.qkv(y)
    q, k, v = qkv.reshape(B, N, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
    attn = (q * attention.scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
    attn = attention.attn_drop(attn.softmax(dim=-1))
    y = attention.proj_drop(attention.proj((attn @ v).transpose(1, 2).reshape(B, N, C)))
    x = x + layer.drop_path(layer.gamma_1 * y)
    return x + layer.drop_path(layer.gamma_2 * layer.ffn(layer.norm2(x)))


class BEiTTokens(ViTTokens):
    """mmseg ``BEiT``: class token + H*W patch tokens, relative position bias in every
    layer (read for the centres by :func:`centre_bias`), ``norm1`` after the last layer."""

    extra_tokens = 1

    def embed(self, inputs: Tensor):
        x, hw = self.model.patch_embed(inputs)
        return torch.cat((self.model.cls_token.expand(x.shape[0], -1, -1), x), dim=1), hw

    def layer(self, index: int, layer: nn.Module, x: Tensor, state) -> Tensor:
        if state is None:
            return layer(x)
        return beit_layer(layer, x, centre_bias(layer.attn, state.hw, state.grid))

    def output(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        tokens = x[:, 1:]
        return tokens.reshape(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()


class MAETokens(BEiTTokens):
    """mmseg ``MAE``: BEiT's layout plus an absolute position embedding of the pre-training
    grid (added as is, as the stock forward does)."""

    def embed(self, inputs: Tensor):
        x, hw = super().embed(inputs)
        return x + self.model.pos_embed, hw


class ExpeditedBEiT(SegmentationViTMixin, BEiT):
    """mmseg's ``BEiT`` that runs layers ``cluster_after+1 .. reconstruct_after`` on cluster
    centres (``docs/method.md`` §4.5). Takes every ``BEiT`` argument, with the same
    state-dict keys, plus the expedite arguments of ``ExpeditedViT``
    (:data:`~expedite_mm.core.args.DENSE_VIT`). Each layer's relative position bias is
    read for the centres from its own table on every call (:func:`centre_bias`)."""

    adapter = BEiTTokens
    allowed_reducers = GRID_REDUCERS    # the bias is read on a grid of centres

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_segmentation()


class ExpeditedMAE(SegmentationViTMixin, MAE):
    """mmseg's ``MAE`` backbone with token clustering/reconstruction: as
    :class:`ExpeditedBEiT`, with MAE's absolute position embedding."""

    adapter = MAETokens
    allowed_reducers = GRID_REDUCERS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_segmentation()


__all__ = ["ExpeditedBEiT", "ExpeditedMAE", "BEiTTokens", "MAETokens", "centre_bias",
           "beit_layer"]
