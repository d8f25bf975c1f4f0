"""``DPTDepthHead``: DPT's reassemble/fusion decoder with the monocular-depth output head.

Written from the DPT paper (Ranftl et al., "Vision Transformers for Dense Prediction",
ICCV 2021), for mmseg's ``DepthEstimator``:

1. *Reassemble* every ViT tap ``(tokens (B, C, h, w), class token (B, C))``: a readout
   (``ignore`` the class token, ``add`` it, or ``project``: concatenate it to every token,
   Linear(2C -> C) + GELU), a 1x1 convolution to ``post_process_channels[i]`` and a
   resampling by ``reassemble_factors[i]`` (4 or 2: transposed convolution with kernel =
   stride = factor; 1: none; 0.5: 3x3 convolution with stride 2). Convolutional taps
   (factor ``None``; the hybrid's ResNet stages) pass through unchanged.
2. A 3x3 convolution (no bias) brings every tap to ``channels``.
3. *Fusion*, from the coarsest tap up: ``x = x + RCU(skip)``, ``x = RCU(x)``, bilinear
   x2 upsampling (align_corners=True), 1x1 convolution. ``RCU(x) = x +
   conv(relu(conv(relu(x))))`` with biased 3x3 convolutions and no norm.
4. The monodepth head: 3x3 conv to ``channels // 2``, bilinear x2 upsampling, 3x3 conv
   to ``head_channels``, ReLU, 1x1 conv to one channel, ReLU (``non_negative``).
   DPT's KITTI/NYU models predict inverse depth: with ``invert=True`` the head returns
   ``depth = 1 / max(depth_scale * out + depth_shift, 1e-8)``.

Where a tap is not exactly half the size of the next finer one (inputs that are not
multiples of 32), the fused map is upsampled to the finer tap's size instead of x2.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import Tensor, nn

READOUTS = ("ignore", "add", "project")
FACTORS = (4, 2, 1, 0.5)
MIN_INVERSE_DEPTH = 1e-8  # DPT clamps the affine-mapped output here before inverting


class Reassemble(nn.Module):
    """One ViT tap (B, C, h, w) + class token (B, C) -> (B, out_channels, h*f, w*f)."""

    def __init__(self, in_channels: int, out_channels: int, factor: float, readout: str) -> None:
        super().__init__()
        self.readout_type = readout
        if readout == "project":
            self.readout = nn.Sequential(nn.Linear(2 * in_channels, in_channels), nn.GELU())
        self.project = nn.Conv2d(in_channels, out_channels, 1)
        if factor > 1:
            self.resample = nn.ConvTranspose2d(out_channels, out_channels, int(factor),
                                               stride=int(factor))
        elif factor == 1:
            self.resample = nn.Identity()
        else:
            self.resample = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, cls_token: Optional[Tensor]) -> Tensor:
        if self.readout_type != "ignore":
            if cls_token is None:
                raise ValueError(f"readout_type={self.readout_type!r} needs the class token: "
                                 f"set output_cls_token=True in the backbone")
            B, C, h, w = x.shape
            if self.readout_type == "add":
                x = x + cls_token[:, :, None, None]
            else:
                tokens = x.flatten(2).transpose(1, 2)                      # (B, hw, C)
                readout = cls_token[:, None, :].expand_as(tokens)
                tokens = self.readout(torch.cat((tokens, readout), dim=-1))
                x = tokens.transpose(1, 2).reshape(B, C, h, w)
        return self.resample(self.project(x))


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))``, biased 3x3 convolutions, no norm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """``project(upsample(RCU2(x + RCU1(skip))))``; the coarsest block has no skip."""

    def __init__(self, channels: int, with_skip: bool) -> None:
        super().__init__()
        self.res_unit1 = ResidualConvUnit(channels) if with_skip else None
        self.res_unit2 = ResidualConvUnit(channels)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, skip: Optional[Tensor], size: Tuple[int, int]) -> Tensor:
        if skip is not None:
            x = x + self.res_unit1(skip)
        x = self.res_unit2(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.project(x)


def _validate(in_channels, post_process_channels, reassemble_factors, readout_type, channels):
    n = len(in_channels)
    if n < 1 or len(post_process_channels) != n or len(reassemble_factors) != n:
        raise ValueError(f"in_channels, post_process_channels and reassemble_factors must "
                         f"have the same (non-zero) length, got {tuple(in_channels)}, "
                         f"{tuple(post_process_channels)}, {tuple(reassemble_factors)}")
    for i, factor in enumerate(reassemble_factors):
        if factor is not None and factor not in FACTORS:
            raise ValueError(f"reassemble_factors[{i}] must be None (a convolutional tap) or "
                             f"one of {FACTORS}, got {factor!r}")
        if factor is None and post_process_channels[i] != in_channels[i]:
            raise ValueError(f"post_process_channels[{i}] must equal in_channels[{i}] "
                             f"({in_channels[i]}) for a convolutional tap (factor None), "
                             f"got {post_process_channels[i]}")
    if readout_type not in READOUTS:
        raise ValueError(f"readout_type must be one of {READOUTS}, got {readout_type!r}")
    if not isinstance(channels, int) or channels < 2:
        raise ValueError(f"channels must be an int >= 2, got {channels!r}")


@MODELS.register_module()
class DPTDepthHead(BaseDecodeHead):
    """DPT decoder + monodepth head, for mmseg's ``DepthEstimator``.

    Args:
        in_channels: channels of the selected backbone outputs, finest first.
        channels: the decoder width (DPT: 256).
        post_process_channels: channels after reassembling (hybrid: 256, 512, 768, 768).
        reassemble_factors: per tap, ``None`` for a convolutional tap, else the
            resampling factor 4, 2, 1 or 0.5 (hybrid: None, None, 1, 0.5).
        readout_type: ``'ignore'``, ``'add'`` or ``'project'`` (DPT: project).
        head_channels: channels of the last 3x3 convolution (DPT: 32).
        non_negative: ReLU on the output. invert: return ``1 / (depth_scale * out +
        depth_shift)`` (clamped at 1e-8), the metric depth of DPT's KITTI/NYU models.
        in_index: which backbone outputs to use (default: all, in order).
        loss_decode: training loss on the depth (SiLog by default).

    ``forward(inputs)`` -> depth (B, 1, H, W), H and W twice the finest tap's size.
    """

    num_classes = 1
    out_channels = 1

    def __init__(self, in_channels: Sequence[int] = (256, 512, 768, 768), channels: int = 256,
                 post_process_channels: Sequence[int] = (256, 512, 768, 768),
                 reassemble_factors: Sequence[Optional[float]] = (None, None, 1, 0.5),
                 readout_type: str = "project", head_channels: int = 32,
                 non_negative: bool = True, invert: bool = False, depth_scale: float = 1.0,
                 depth_shift: float = 0.0, in_index: Optional[Sequence[int]] = None,
                 align_corners: bool = False,
                 loss_decode: Union[dict, Sequence[dict]] = dict(type="SiLogLoss"),
                 init_cfg: Optional[dict] = None) -> None:
        _validate(in_channels, post_process_channels, reassemble_factors, readout_type, channels)
        # BaseDecodeHead's own __init__ builds a classifier (conv_seg) this head does not
        # have; only its module init runs (as mmseg's VPDDepthHead does).
        super(BaseDecodeHead, self).__init__(init_cfg=init_cfg)
        self.in_channels = list(in_channels)
        self.channels = channels
        self.in_index = list(range(len(in_channels)) if in_index is None else in_index)
        if len(self.in_index) != len(in_channels):
            raise ValueError(f"in_index must select {len(in_channels)} backbone outputs, "
                             f"got {in_index!r}")
        self.align_corners = align_corners
        self.invert = invert
        self.depth_scale, self.depth_shift = float(depth_scale), float(depth_shift)
        self.reassemble = nn.ModuleList([
            nn.Identity() if factor is None else
            Reassemble(in_c, out_c, factor, readout_type)
            for in_c, out_c, factor in zip(in_channels, post_process_channels, reassemble_factors)])
        self.convs = nn.ModuleList([nn.Conv2d(c, channels, 3, padding=1, bias=False)
                                    for c in post_process_channels])
        n = len(in_channels)
        self.fusion_blocks = nn.ModuleList([FusionBlock(channels, with_skip=i < n - 1)
                                            for i in range(n)])
        self.depth_head = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(channels // 2, head_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(head_channels, 1, 1),
            nn.ReLU() if non_negative else nn.Identity())
        losses = [loss_decode] if isinstance(loss_decode, dict) else list(loss_decode)
        self.loss_decode = nn.ModuleList([MODELS.build(loss) for loss in losses])

    def forward(self, inputs: Sequence) -> Tensor:
        features: List[Tensor] = []
        for index, reassemble in zip(self.in_index, self.reassemble):
            tap = inputs[index]
            if isinstance(reassemble, Reassemble):
                x, cls_token = (tap[0], tap[1]) if isinstance(tap, (list, tuple)) else (tap, None)
                tap = reassemble(x, cls_token)
            features.append(tap)
        features = [conv(x) for conv, x in zip(self.convs, features)]
        out = None
        for i in reversed(range(len(features))):
            finer = features[i - 1].shape[-2:] if i > 0 else \
                tuple(2 * s for s in features[0].shape[-2:])
            skip = features[i] if out is not None else None
            out = self.fusion_blocks[i](features[i] if out is None else out, skip, finer)
        out = self.depth_head(out)
        if self.invert:
            out = 1.0 / (self.depth_scale * out + self.depth_shift).clamp(min=MIN_INVERSE_DEPTH)
        return out

    def loss_by_feat(self, pred_depth: Tensor, batch_data_samples: list) -> dict:
        gt = torch.stack([sample.gt_depth_map.data for sample in batch_data_samples])
        pred_depth = resize(pred_depth, size=gt.shape[2:], mode="bilinear",
                            align_corners=self.align_corners)
        losses: dict = {}
        for loss in self.loss_decode:
            losses[loss.loss_name] = losses.get(loss.loss_name, 0) + loss(pred_depth, gt)
        return losses
