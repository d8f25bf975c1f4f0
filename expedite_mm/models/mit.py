"""``ExpeditedMiT``: mmseg's ``MixVisionTransformer`` (SegFormer's MiT encoder) with
token clustering in one stage (``docs/method.md`` §4.8).

MiT is a pyramid of four stages; each embeds its input with an overlapping strided
convolution, runs its blocks on the ``(B, H*W, C)`` tokens of that map and normalises
them. Its blocks need the map, not just the tokens: the attention computes its keys and
values from a map reduced by a strided convolution (``sr_ratio``), and the Mix-FFN runs a
depthwise 3x3 convolution. The expedited stage clusters its tokens to an ``h x w`` grid
of centres after block ``cluster_after`` (as the plain ViTs do with the whole grid:
:class:`~expedite_mm.core.GridTokens`), runs the next blocks on the centres laid out as
that grid -- the same convolutions on the smaller map -- and reconstructs the full map
after block ``reconstruct_after`` (default: after the stage's norm). The other stages run
as they are.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from mmseg.models.backbones import MixVisionTransformer
from mmseg.models.utils import nlc_to_nchw
from torch import Tensor, nn

from ..core import GRID_STAGE, ExpediteMixin, GridTokens, run_hourglass
from ..core.hourglass import warn_fallback
from ..ops.cluster import resolve_grid
from ..ops.reducers import GRID_REDUCERS

HW = Tuple[int, int]


class MiTStageTokens(GridTokens):
    """One MiT stage: blocks take ``(x, hw)``; on the centres ``hw`` is their grid. The
    stage's norm follows its last block (so the default reconstruction comes after it, as
    the plain ViTs' after their final norm)."""

    def __init__(self, model: nn.Module, blocks: Sequence[nn.Module], norm: nn.Module,
                 hw: HW) -> None:
        super().__init__(model)
        self.blocks, self.norm, self.hw = blocks, norm, hw

    def layers(self) -> Sequence[nn.Module]:
        return self.blocks

    def too_small(self, hw: HW) -> Optional[str]:
        fewer = super().too_small(hw)
        if fewer is not None:
            return fewer
        # the attention's key/value map is the centres' map reduced by a stride-sr conv
        sr = int(self.blocks[0].attn.sr_ratio)
        h, w = resolve_grid(self.model.clustering.grid, hw)
        return None if min(h, w) >= sr else (f"{h}x{w} centres, a map the attention's "
                                             f"{sr}x{sr} spatial reduction cannot take")

    def layer(self, index: int, block: nn.Module, x: Tensor, state) -> Tensor:
        return block(x, self.hw if state is None else state.grid)

    def after_layer(self, index: int, x: Tensor) -> Tensor:
        return self.norm(x) if index == len(self.blocks) - 1 else x


class ExpeditedMiT(ExpediteMixin, MixVisionTransformer):
    """mmseg's ``MixVisionTransformer`` that runs blocks ``cluster_after+1 ..
    reconstruct_after`` of stage ``stage`` on a grid of cluster centres.

    Takes every ``MixVisionTransformer`` argument, with the same state-dict keys, plus the
    expedite arguments of :data:`~expedite_mm.core.args.GRID_STAGE`: ``stage`` (0-based,
    default 2: the deepest stage, 40 of MiT-B5's 52 blocks), ``cluster_after`` /
    ``reconstruct_after`` (counted in that stage's blocks), ``cluster_grid`` (the centres of
    the stage's token map: an int, ``(h, w)`` or a ratio, default 0.7) and the shared ones
    (``cluster_window``, ``cluster_iters``, ``temperature``, ``reconstruct_k``, ...).
    Reducers: the method and the grid baseline ``AvgPool`` (the blocks need a map).
    Every output comes back at the stock resolution.
    """

    expedite_family = GRID_STAGE
    adapter = MiTStageTokens

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stage = self.expedite_args.stages.stage
        if stage >= len(self.layers):
            raise ValueError(f"stage must be an int in [0, {len(self.layers) - 1}] (0-based "
                             f"index of the stage to expedite), got {stage}")
        self.expedited_stage = stage
        self._setup_expedite(len(self.layers[stage][1]), self.expedite_args.grid.cluster_grid,
                             what=f"blocks of stage {stage}", allowed_reducers=GRID_REDUCERS)

    def forward(self, x: Tensor) -> List[Tensor]:
        if not self.expedited:
            return super().forward(x)
        outs = []
        for index, (patch_embed, blocks, norm) in enumerate(self.layers):
            x, hw = patch_embed(x)
            if index == self.expedited_stage:
                x = self._expedited_stage(x, hw, blocks, norm)
            else:
                for block in blocks:
                    x = block(x, hw)
                x = norm(x)
            x = nlc_to_nchw(x, hw)
            if index in self.out_indices:
                outs.append(x)
        return outs

    def _expedited_stage(self, x: Tensor, hw: HW, blocks: Sequence[nn.Module],
                         norm: nn.Module) -> Tensor:
        """The stage's blocks and norm with clustering (stock where ``hw`` is too small)."""
        adapter = MiTStageTokens(self, blocks, norm, hw)
        clustered = adapter.too_small(hw)
        if clustered is not None:
            warn_fallback(self, hw, clustered)
            for block in blocks:
                x = block(x, hw)
            return norm(x)
        _, _, x = run_hourglass(adapter, x, hw, self.cluster_after, self.reconstruct_after)
        return x


__all__ = ["ExpeditedMiT", "MiTStageTokens"]
