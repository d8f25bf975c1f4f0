"""The R50+ViT-B/16 hybrid backbone of DPT, stock and expedited.

``HybridViT`` is mmseg's ``VisionTransformer`` run on the stride-16 output of a BiT ResNet
(:class:`~expedite_mm.models.dpt.bit_resnet.BiTResNet`) through a 1x1 "patch" embedding, as
in the ViT paper's hybrid and DPT's ``vitb_rn50_384``; it also returns the outputs of
the first ResNet stages (DPT's first two taps). ``ExpeditedHybridViT`` adds
:class:`~expedite_mm.models.vit.ExpeditedViT`'s clustering/reconstruction to the ViT
part: the same class, the same loop and adapter, only the embedding input differs.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from torch import Tensor

from ...ops.cluster import ClusterState
from .bit_resnet import BiTResNet
from ..vit import ExpeditedViT


@MODELS.register_module()
class HybridViT(VisionTransformer):
    """BiT ResNet stem + mmseg ``VisionTransformer`` on its stride-16 features (stock).

    Args:
        resnet_depths, resnet_channels, resnet_stem_channels, resnet_num_groups,
        resnet_ws_eps: the :class:`BiTResNet` (defaults: ResNet-50's first three stages).
        resnet_out_indices: ResNet stages whose outputs come first in the outputs
            (DPT: ``(0, 1)``, 256 and 512 channels at strides 4 and 8).
        img_size: the pre-training image size in pixels; the position embedding holds
            ``img_size // 16`` squared positions and is resized (``interpolate_mode``,
            bilinear as in DPT) to the token grid of any input.
        in_channels: image channels.
        **kwargs: every other ``VisionTransformer`` argument (embed_dims, num_layers,
            out_indices, output_cls_token, norm_cfg, ...). ``patch_size`` is not one: the
            ViT sees 1x1 patches of the ResNet features (the hybrid's "16" is its stride).

    Input (B, 3, H, W) -> the ResNet outputs (B, C_i, ceil(H/s_i), ceil(W/s_i)), then the
    ``VisionTransformer`` outputs on the ``ceil(H/16) x ceil(W/16)`` token grid.
    """

    def __init__(self, resnet_depths: Sequence[int] = (3, 4, 9),
                 resnet_channels: Sequence[int] = (256, 512, 1024),
                 resnet_stem_channels: int = 64, resnet_num_groups: int = 32,
                 resnet_ws_eps: float = 1e-8, resnet_out_indices: Sequence[int] = (0, 1),
                 img_size: int = 384, in_channels: int = 3, patch_bias: bool = True,
                 interpolate_mode: str = "bilinear", **kwargs) -> None:
        if "patch_size" in kwargs:
            raise ValueError("patch_size is not an argument of HybridViT: the ViT runs on 1x1 "
                             "patches of the ResNet features, whose stride sets the token grid")
        resnet = BiTResNet(resnet_depths, resnet_channels, resnet_stem_channels,
                           resnet_num_groups, resnet_ws_eps, in_channels)
        out_indices = tuple(resnet_out_indices)
        if not all(isinstance(i, int) and 0 <= i < len(resnet_depths) for i in out_indices):
            raise ValueError(f"resnet_out_indices must hold stage indices in "
                             f"[0, {len(resnet_depths) - 1}], got {resnet_out_indices!r}")
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        grid = tuple(size // resnet.stride for size in img_size)
        # a plain attribute, set before the ViT's __init__: the expedited subclass reads it
        # there to decide whether the logits placement is possible
        self.resnet_out_indices = out_indices
        super().__init__(img_size=grid, patch_size=1, in_channels=resnet.out_channels[-1],
                         patch_bias=patch_bias, interpolate_mode=interpolate_mode, **kwargs)
        self.resnet = resnet

    def _pos_embeding(self, patched_img: Tensor, hw_shape: Tuple[int, int],
                      pos_embed: Tensor) -> Tensor:
        """Add the position embedding, resized to the token grid ``hw_shape``.

        mmseg resizes only when the token *count* differs from the pre-training grid's,
        which would skip e.g. a 16 x 36 grid against 24 x 24; DPT resizes to every grid
        that is not the pre-training one, and so do we.
        """
        grid = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)
        if tuple(hw_shape) != grid:
            pos_embed = self.resize_pos_embed(pos_embed, hw_shape, grid, self.interpolate_mode)
        return self.drop_after_pos(patched_img + pos_embed)

    def forward(self, inputs: Tensor) -> Tuple:
        stages = self.resnet(inputs)
        return (*[stages[i] for i in self.resnet_out_indices], *self.vit_forward(stages[-1]))

    def vit_forward(self, features: Tensor) -> Tuple:
        """The ViT part alone (patch and position embedding, layers, norms) on the ResNet's
        last stage ``features`` (B, C, H/stride, W/stride); returns the ViT's outputs."""
        return VisionTransformer.forward(self, features)


class ExpeditedHybridViT(HybridViT, ExpeditedViT):
    """``HybridViT`` with token clustering/reconstruction in its ViT (``docs/method.md``).

    Takes every ``HybridViT`` argument plus the expedite arguments of
    :data:`~expedite_mm.core.args.DENSE_VIT` (``cluster_after``, ``cluster_grid``,
    ...; ``cluster_grid`` as a ratio is relative to the stride-16 token grid), with the
    same state-dict keys as ``HybridViT``. ViT outputs inside the clustered span come
    back reconstructed at full resolution; the ResNet outputs are untouched.
    ``cluster_after=None`` gives the stock ``HybridViT`` forward.
    ``reconstruct_placement='logits'`` needs a head that reads the one centre map, so it is
    refused when ResNet outputs are returned too (DPT's head reads them at full
    resolution); with ``resnet_out_indices=()`` (a Segmenter on the hybrid, as the
    project's accuracy benchmark) it works as for ``ExpeditedViT``.
    """

    @property
    def logits_placement_supported(self) -> bool:
        return not self.resnet_out_indices

    # ExpeditedViT's forward (the refusal with the logits placement, then the outputs of
    # forward_with_state), on the image: forward_with_state below runs the ResNet first
    forward = ExpeditedViT.forward

    def forward_with_state(self, inputs: Tensor) -> Tuple[Tuple, Optional[ClusterState]]:
        """:meth:`ExpeditedViT.forward_with_state` on the ResNet's last stage, its outputs
        after the ResNet taps (the image goes through the ResNet first)."""
        stages = self.resnet(inputs)
        outs, state = ExpeditedViT.forward_with_state(self, stages[-1])
        return (*[stages[i] for i in self.resnet_out_indices], *outs), state

    def vit_forward(self, features: Tensor) -> Tuple:
        """The expedited ViT part alone on the ResNet's last stage (full-resolution outputs)."""
        return ExpeditedViT.forward_with_state(self, features)[0]
