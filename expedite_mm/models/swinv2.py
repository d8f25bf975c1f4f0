"""``ExpeditedSwinV2``: mmpretrain's ``SwinTransformerV2`` + window clustering (SPEC §2).

One class on mmpretrain's backbone, registered into mmdet's and mmseg's ``MODELS`` (see
``expedite_mm.models``) so detection/segmentation configs name it like any backbone. The
window clustering, the block loop and the window-k block runner are the Swin ones
(:class:`~expedite_mm.models.swin.WindowExpediteMixin`); what differs is SwinV2's position
bias and stage layout.
"""
from __future__ import annotations

import importlib
import sys
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from ..ops.window import crop_coords_table
from .swin import WindowExpediteMixin, cached_position_index

STOCK_MODULE = "mmpretrain.models.backbones.swin_transformer_v2"


def _stock_swinv2() -> type:
    """mmpretrain's ``SwinTransformerV2`` class.

    ``mmpretrain.models`` imports its heads after its backbones, and through them all of
    mmpretrain's metrics, one of which imports torchvision (mmpretrain 1.2.0). Without
    torchvision that package import fails once the backbones are complete; the backbone
    module is all this needs, so that one failure is tolerated (any other is raised).
    """
    try:
        module = importlib.import_module(STOCK_MODULE)
    except ModuleNotFoundError as error:
        module = sys.modules.get(STOCK_MODULE)
        if module is None or (error.name or "").split(".")[0] != "torchvision":
            raise
    return module.SwinTransformerV2


SwinTransformerV2 = _stock_swinv2()


class ExpeditedSwinV2(WindowExpediteMixin, SwinTransformerV2):
    """mmpretrain's ``SwinTransformerV2`` with window token clustering in one stage.

    Takes every argument of ``SwinTransformerV2``, with the same state-dict keys (the
    official checkpoints converted by mmpretrain load unmodified), plus the expedite
    arguments of ``ExpeditedSwin``:

    Args:
        stage: 0-based index of the stage to expedite (default 2, the third stage).
        cluster_after: blocks of that stage before clustering (0 <= alpha < depth); ``None``
            (default) disables expediting and gives the stock backbone. The paper's
            SwinV2-L HTC++ setting is ``stage=2, cluster_after=8``.
        reconstruct_after: the block of that stage after which every window is restored to
            ``K x K`` (default: its last block, 18 for SwinV2-L).
        clustered_window_size: k, the side of a clustered window (1 <= k <= K of that
            stage; default ``round(0.7 * K)``; the paper: 32 -> 23).
        cluster_window, cluster_iters, temperature, reconstruct_k, reconstruct_normalize,
            reconstruct_neighbours: the operators' settings, as for ``ExpeditedSwin``.

    The clustered blocks run the stock SwinV2 block with window k and shift k//2 (for the
    blocks that shift): scaled-cosine attention and post-norm unchanged, and the
    continuous position bias computed by the block's own ``cpb_mlp`` -- as the stock
    forward does, on every call -- from window k's log-spaced relative coordinates,
    normalised by the same pretrained window size as window K's (by K itself where the
    model has none, i.e. the weights were trained at window K). Those coordinates are
    the centre of the stock table (:func:`~expedite_mm.ops.window.crop_coords_table`, a
    view) and the index is cached per window size; neither depends on a parameter, so
    new weights (``load_state_dict``) take effect at once.

    Detection needs ``out_indices=(0, 1, 2, 3)`` (an FPN) and ``pad_small_map=True``
    (mmpretrain's default shrinks windows to small maps, as for classification).
    """

    def _expedited_stage_forward(self, stage: nn.Module, x: Tensor,
                                 in_shape: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
        """Replaces ``SwinBlockV2Sequence.forward``: patch merging first, then the blocks."""
        if stage.downsample:
            x, hw = stage.downsample(x, in_shape)
        else:
            hw = in_shape
        if self._can_expedite(hw):
            return self._expedited_blocks(stage.blocks, x, hw,
                                          lambda block, x, hw: block(x, hw)), hw
        for block in stage.blocks:   # too small to cluster: the stock loop
            x = block(x, hw)
        return x, hw

    def _window_k_tensors(self, index: int, block: nn.Module, k: int,
                          device: torch.device) -> Dict[str, Tensor]:
        w_msa = block.attn.w_msa
        return {
            "attn.w_msa.relative_coords_table": crop_coords_table(w_msa.relative_coords_table, k),
            "attn.w_msa.relative_position_index": cached_position_index(k, str(device)),
        }


def register_in(package: str) -> list:
    """Register :class:`ExpeditedSwinV2`, and mmpretrain's stock ``SwinTransformerV2``
    where that name is free, in ``package``'s ``MODELS`` (e.g. mmdet, mmseg).

    The stock class is registered so that stock configs build without mmengine's scoped
    ``'mmpretrain.SwinTransformerV2'``: that lookup imports all of ``mmpretrain.models``,
    which needs torchvision (see :func:`_stock_swinv2`). Returns the names registered.
    """
    registry = importlib.import_module(f"{package}.registry").MODELS
    registry.register_module(module=ExpeditedSwinV2)
    names = ["ExpeditedSwinV2"]
    if registry.get("SwinTransformerV2") is None:
        registry.register_module(module=SwinTransformerV2)
        names.append("SwinTransformerV2")
    return names


__all__ = ["ExpeditedSwinV2", "SwinTransformerV2", "register_in"]
