"""``BiTResNet``: the ResNet stem of the R50+ViT-B/16 hybrid (ViT paper, used by DPT).

The hybrid's convolutional part is a BiT-style ResNet ("ResNetV2" in timm, built there
with ``preact=False``): every convolution is weight-standardised and padded like
TensorFlow's ``SAME`` (asymmetric for strided convolutions), every norm is a GroupNorm
of 32 groups, and the blocks are *post*-activation bottlenecks (conv-norm-ReLU twice,
conv-norm, add the shortcut, ReLU). Stem: 7x7/2 convolution, GroupNorm, ReLU, 3x3/2 max
pool (``SAME``); stages of (3, 4, 9) bottlenecks with 256/512/1024 output channels at
strides 4, 8 and 16. The first block of every stage has a projection shortcut
(1x1 weight-standardised conv + GroupNorm); the stride sits on its 3x3 convolution.

Pure torch; written from that description. It only runs as the hybrid's stem
(:class:`~expedite_mm.models.dpt.hybrid_vit.HybridViT`), so it is not registered.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """(before, after) padding of TensorFlow's ``SAME`` for one spatial dimension."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class StdConv2dSame(nn.Conv2d):
    """Conv2d with weight standardisation and ``SAME`` padding.

    The kernel of every output channel is normalised to zero mean and unit variance
    (biased variance, ``eps`` inside the square root) before the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = False, eps: float = 1e-8) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         bias=bias)
        self.eps = eps

    def standardized_weight(self) -> Tensor:
        flat = self.weight.reshape(self.out_channels, -1)
        var, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
        return ((flat - mean) / torch.sqrt(var + self.eps)).reshape_as(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if (top, left) == (bottom, right):        # symmetric: let the convolution pad
            return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, (top, left))
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride)


class MaxPool2dSame(nn.Module):
    """Max pooling with ``SAME`` padding (padded with -inf, so padding never wins)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return F.max_pool2d(x, self.kernel_size, self.stride)


class Bottleneck(nn.Module):
    """Post-activation bottleneck with weight-standardised convs and GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, projection: bool,
                 num_groups: int, ws_eps: float) -> None:
        super().__init__()
        mid = out_channels // 4
        self.downsample = nn.Sequential()
        if projection:
            self.downsample.add_module(
                "conv", StdConv2dSame(in_channels, out_channels, 1, stride, eps=ws_eps))
            self.downsample.add_module("norm", nn.GroupNorm(num_groups, out_channels))
        self.conv1 = StdConv2dSame(in_channels, mid, 1, eps=ws_eps)
        self.norm1 = nn.GroupNorm(num_groups, mid)
        self.conv2 = StdConv2dSame(mid, mid, 3, stride, eps=ws_eps)
        self.norm2 = nn.GroupNorm(num_groups, mid)
        self.conv3 = StdConv2dSame(mid, out_channels, 1, eps=ws_eps)
        self.norm3 = nn.GroupNorm(num_groups, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.downsample(x)           # empty Sequential = identity
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class BiTResNet(nn.Module):
    """Stem + bottleneck stages; ``forward`` returns every stage's output.

    Args:
        depths: bottlenecks per stage ((3, 4, 9) in the R50 hybrid).
        stage_channels: output channels per stage (bottleneck width = a quarter).
        stem_channels: channels of the 7x7 stem convolution.
        num_groups: GroupNorm groups. ws_eps: epsilon of weight standardisation.
        in_channels: image channels.

    Input (B, in_channels, H, W) -> list of (B, stage_channels[i], H_i, W_i) with
    ``H_0 = ceil(H / 4)`` and every later stage halving (``SAME``: ceil) the previous one.
    """

    def __init__(self, depths: Sequence[int] = (3, 4, 9),
                 stage_channels: Sequence[int] = (256, 512, 1024), stem_channels: int = 64,
                 num_groups: int = 32, ws_eps: float = 1e-8, in_channels: int = 3) -> None:
        super().__init__()
        if len(depths) != len(stage_channels) or not depths:
            raise ValueError(f"depths and stage_channels must be non-empty and of equal length, "
                             f"got {tuple(depths)} and {tuple(stage_channels)}")
        self.stem = nn.Sequential()
        self.stem.add_module("conv", StdConv2dSame(in_channels, stem_channels, 7, 2, eps=ws_eps))
        self.stem.add_module("norm", nn.GroupNorm(num_groups, stem_channels))
        self.stem.add_module("act", nn.ReLU())
        self.stem.add_module("pool", MaxPool2dSame(3, 2))
        self.stages = nn.ModuleList()
        previous = stem_channels
        for index, (depth, channels) in enumerate(zip(depths, stage_channels)):
            stride = 1 if index == 0 else 2
            self.stages.append(nn.Sequential(*[
                Bottleneck(previous if block == 0 else channels, channels,
                           stride if block == 0 else 1, block == 0, num_groups, ws_eps)
                for block in range(depth)]))
            previous = channels
        self.out_channels: List[int] = list(stage_channels)
        self.stride = 4 * 2 ** (len(depths) - 1)

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
