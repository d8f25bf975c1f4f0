"""What the pyramid transformers share: token clustering in one stage of a backbone built
as stages of ``(patch embedding, blocks, norm)`` -- SegFormer's MiT (``mit.py``), PVT /
PVTv2 (``pvt.py``, ``pvtv2.py``) and Twins (``twins.py``); ``docs/method.md`` §4.8.

Each stage embeds its input with a strided convolution, runs its blocks on the
``(B, H*W, C)`` tokens of that map and normalises them. The blocks need the map, not just
the tokens: the attention computes its keys and values from a map reduced by a strided
convolution (``sr_ratio``), and MiT's Mix-FFN (PVTv2's conv FFN) runs a depthwise 3x3
convolution. The expedited stage clusters its tokens to an ``h x w`` grid of centres after
block ``cluster_after`` (as the plain ViTs do with the whole grid:
:class:`~expedite_mm.core.GridTokens`), runs the next blocks on the centres laid out as
that grid -- the same convolutions on the smaller map -- and reconstructs the full map
after block ``reconstruct_after`` (default: after the stage's norm). The other stages run
as they are.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from ..core import GRID_STAGE, ExpediteMixin, GridTokens, run_hourglass
from ..core.hourglass import warn_fallback
from ..ops.cluster import resolve_grid
from ..ops.reducers import GRID_REDUCERS

HW = Tuple[int, int]


def _to_map(x: Tensor, hw: HW) -> Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W), as the stock stages hand them on."""
    B, _, C = x.shape
    return x.transpose(1, 2).reshape(B, C, *hw).contiguous()


class PyramidStageTokens(GridTokens):
    """One pyramid stage: blocks take ``(x, hw)``; on the centres ``hw`` is their grid.
    ``after_first`` (Twins' conditional position encoding, also ``(x, hw)``) follows the
    first block; the stage's norm follows its last block (so the default reconstruction
    comes after it, as the plain ViTs' after their final norm)."""

    def __init__(self, model: nn.Module, blocks: Sequence[nn.Module], norm: nn.Module,
                 hw: HW, after_first: Optional[nn.Module] = None) -> None:
        super().__init__(model)
        self.blocks, self.norm, self.hw, self.after_first = blocks, norm, hw, after_first

    def layers(self) -> Sequence[nn.Module]:
        return self.blocks

    def too_small(self, hw: HW) -> Optional[str]:
        fewer = super().too_small(hw)
        if fewer is not None:
            return fewer
        # the attention's key/value map is the centres' map reduced by a stride-sr conv
        sr = max(int(getattr(block.attn, "sr_ratio", 1)) for block in self.blocks)
        h, w = resolve_grid(self.model.clustering.grid, hw)
        return None if min(h, w) >= sr else (f"{h}x{w} centres, a map the attention's "
                                             f"{sr}x{sr} spatial reduction cannot take")

    def layer(self, index: int, block: nn.Module, x: Tensor, state) -> Tensor:
        hw = self.hw if state is None else state.grid
        x = block(x, hw)
        return self.after_first(x, hw) if index == 0 and self.after_first is not None else x

    def after_layer(self, index: int, x: Tensor) -> Tensor:
        return self.norm(x) if index == len(self.blocks) - 1 else x


class PyramidExpediteMixin(ExpediteMixin):
    """Token clustering in one stage of a pyramid transformer whose ``layers[i]`` is
    ``ModuleList([patch_embed, blocks, norm])``, as mmseg's ``MixVisionTransformer`` and
    mmdet's ``PyramidVisionTransformer`` are (``blocks`` may start with steps that are not
    transformer blocks, e.g. PVT's absolute position embedding: :meth:`split_blocks`).

    Takes the stock arguments plus those of :data:`~expedite_mm.core.args.GRID_STAGE`:
    ``stage`` (0-based, default 2: the deepest stage), ``cluster_after`` /
    ``reconstruct_after`` (counted in that stage's transformer blocks), ``cluster_grid``
    (the centres of the stage's token map: an int, ``(h, w)`` or a ratio, default 0.7) and
    the shared ones (``cluster_window``, ``cluster_iters``, ``temperature``,
    ``reconstruct_k``, ...). Reducers: the method and the grid baseline ``AvgPool`` (the
    blocks need a map). Every output comes back at the stock resolution.
    """

    expedite_family = GRID_STAGE
    adapter = PyramidStageTokens

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stage = self.expedite_args.stages.index_among(len(self.layers))
        self.expedited_stage = stage
        _, blocks = self.split_blocks(self.stage_steps(stage))
        self._setup_expedite(len(blocks), self.expedite_args.grid.cluster_grid,
                             what=f"blocks of stage {stage}", allowed_reducers=GRID_REDUCERS)

    def stage_steps(self, stage: int) -> Sequence[nn.Module]:
        """The steps of stage ``stage`` after its patch embedding (MiT, PVT: ``layers[i][1]``)."""
        return self.layers[stage][1]

    def patch_embeddings(self) -> Sequence[nn.Module]:
        """Every stage's patch embedding, in order (MiT, PVT: ``layers[i][0]``)."""
        return [layer[0] for layer in self.layers]

    @staticmethod
    def split_blocks(steps: Sequence[nn.Module]) -> Tuple[Sequence[nn.Module],
                                                          Sequence[nn.Module]]:
        """A stage's steps after its patch embedding -> (steps before its transformer
        blocks, the blocks); by default every step is a block."""
        return (), steps

    def forward(self, x: Tensor) -> List[Tensor]:
        if not self.expedited:
            return super().forward(x)
        outs = []
        for index, (patch_embed, steps, norm) in enumerate(self.layers):
            x, hw = patch_embed(x)
            if index == self.expedited_stage:
                x = self._expedited_stage(x, hw, steps, norm)
            else:
                for step in steps:
                    x = step(x, hw)
                x = norm(x)
            x = _to_map(x, hw)
            if index in self.out_indices:
                outs.append(x)
        return outs

    def _expedited_stage(self, x: Tensor, hw: HW, steps: Sequence[nn.Module],
                         norm: nn.Module, after_first: Optional[nn.Module] = None) -> Tensor:
        """The stage's steps and norm with clustering (stock where ``hw`` is too small)."""
        before, blocks = self.split_blocks(steps)
        for step in before:
            x = step(x, hw)
        adapter = PyramidStageTokens(self, blocks, norm, hw, after_first)
        clustered = adapter.too_small(hw)
        if clustered is not None:
            warn_fallback(self, hw, clustered)
            for index, block in enumerate(blocks):
                x = adapter.layer(index, block, x, None)
            return norm(x)
        _, _, x = run_hourglass(adapter, x, hw, self.cluster_after, self.reconstruct_after)
        return x


__all__ = ["PyramidExpediteMixin", "PyramidStageTokens"]
