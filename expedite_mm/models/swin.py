"""What the Swin-style backbones share: window clustering in one stage
(``docs/method.md`` §4.2). ``ExpeditedSwin`` is mmseg's (``swin_mmseg.py``) and mmdet's
(``swin_mmdet.py``) ``SwinTransformer`` with it; SwinV2: ``swinv2.py``.

Set up once, at ``__init__`` (ToMe-style): the expedited stage is replaced by an instance
of a subclass of its stock class (:class:`ExpeditedStageMixin`, built from the stock stage
and holding its very submodules) whose ``forward`` runs the hourglass loop
(:func:`~expedite_mm.core.run_hourglass`) over the stage's blocks with the
:class:`SwinStageTokens` window adapter; nothing is
patched per call and no module attribute or parameter is written in a forward, so
forwards are reentrant and thread-safe. The blocks before clustering and after
reconstruction are called as they are; the clustered blocks run through
:func:`swin_block_clustered` -- the stock block's own submodules (norms, qkv, projection,
FFN) around a window-k attention whose position bias is derived from the block's
parameters on every call (the bilinearly resized table for Swin, the continuous position
bias for SwinV2: microseconds, so nothing is cached and new weights take effect at once).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Tuple

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..core import WINDOWED_STAGE, ExpediteMixin, WindowTokens, run_hourglass
from ..core.hourglass import warn_fallback
from ..ops.reducers import GRID_REDUCERS
from ..ops.window import clustered_window_hw
from .window_attention import (attend_windows, relative_position_index, resize_bias_table,
                               shifted_window_attention)

# (block, x (B, H*W, C), hw, window, shift, mask_shift) -> (B, H*W, C)
ClusteredBlock = Callable[[nn.Module, Tensor, Tuple[int, int], int, int, int], Tensor]


@dataclass(frozen=True)
class StagePlan:
    """Everything the expedited stage needs, fixed at build time.

    cluster_after / reconstruct_after: blocks of the stage (1-based counts, as
    ``cluster_after`` / ``reconstruct_after``); window_size: K; clustered_window_size: k;
    cluster_padding, attention_mask_shift: the arguments; clustering / reconstruction: the
    operator pair (parameter-free modules); owner: the backbone, named in the fallback
    warning.
    """

    cluster_after: int
    reconstruct_after: int
    window_size: int
    clustered_window_size: int
    cluster_padding: bool
    attention_mask_shift: str
    clustering: nn.Module
    reconstruction: nn.Module
    owner: str

    def clustered_hw(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        """The map of centres the stage clusters an ``hw`` token map to."""
        k = self.clustered_window_size
        return clustered_window_hw(hw, self.window_size, (k, k), self.cluster_padding)


class SwinStageTokens(WindowTokens):
    """One stage of a Swin-style backbone: blocks take ``(x, hw)``; on the centres they
    attend within windows of k, shifted by k // 2 where the stock block shifts (and
    masked for the stock shift K // 2 with ``attention_mask_shift='stock'``)."""

    def __init__(self, plan: StagePlan, hw: Tuple[int, int], clustered_block: ClusteredBlock
                 ) -> None:
        super().__init__(plan)
        self.hw, self.clustered_block = hw, clustered_block

    def layer(self, index: int, block: nn.Module, x: Tensor, state) -> Tensor:
        if state is None:
            return block(x, self.hw)
        plan, stock_shift = self.model, block.attn.shift_size
        k = plan.clustered_window_size
        shift = k // 2 if stock_shift > 0 else 0
        mask_shift = stock_shift if plan.attention_mask_shift == "stock" else shift
        return self.clustered_block(block, x, state.clustered_hw, k, shift, mask_shift)


class ExpeditedStageMixin:
    """The expedited stage: mixed into a subclass of the stock stage class (``blocks``),
    built from a stock stage; ``clustered_block`` runs one of its blocks with window k."""

    plan: StagePlan
    clustered_block: ClassVar[ClusteredBlock]

    def __init__(self, stage: nn.Module, plan: StagePlan) -> None:
        """The stock ``stage`` as an expedited one, with its plan: the new stage holds the
        stock stage's own blocks, downsampling, parameters, buffers and attributes (the
        same objects: nothing is built or copied), so the state-dict keys, and pickling,
        are the stock stage's. The backbone puts it in the stock stage's place at build
        time, as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does with its layers:
        the stock ``__init__`` is not run again (it would build the weights twice, and the
        stock backbone builds its stages by the stock class's name)."""
        stock = type(self).__bases__[-1]
        if type(stage) is not stock:
            raise TypeError(f"{type(self).__name__} expedites stages of class "
                            f"{stock.__name__}, got {type(stage).__name__}")
        nn.Module.__init__(self)
        for name, child in stage.named_children():
            self.add_module(name, child)
        for name, parameter in stage.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in stage.named_buffers(recurse=False):
            self.register_buffer(name, buffer,
                                 persistent=name not in stage._non_persistent_buffers_set)
        for name, value in vars(stage).items():     # plain attributes (with_cp, init_cfg...)
            if name not in vars(self):
                self.__dict__[name] = value
        self.train(stage.training)
        self.plan = plan

    def expedited_blocks(self, x: Tensor, hw: Tuple[int, int]) -> Optional[Tensor]:
        """The stage's blocks with clustering; ``None`` if ``hw`` is too small to cluster."""
        plan = self.plan
        adapter = SwinStageTokens(plan, hw, type(self).clustered_block)
        clustered = adapter.too_small(hw)
        if clustered is not None:
            warn_fallback(self, hw, clustered, owner=plan.owner)
            return None
        _, _, x = run_hourglass(adapter, x, hw, plan.cluster_after, plan.reconstruct_after,
                                layers=self.blocks)
        return x


def checkpointed(block: nn.Module, inner: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``inner(x)``, recomputed in backward when the block asks for it (``with_cp``)."""
    if getattr(block, "with_cp", False) and x.requires_grad:
        return checkpoint(inner, x, use_reentrant=False)
    return inner(x)


def window_bias_v1(w_msa: nn.Module, window_size: int) -> Tensor:
    """Swin's relative position bias for window k, (heads, k*k, k*k): the block's
    ((2K-1)^2, heads) table bilinearly resized to (2k-1)^2 rows, indexed as Swin does."""
    table = resize_bias_table(w_msa.relative_position_bias_table, window_size)
    index = relative_position_index(window_size, table.device)
    n = window_size * window_size
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)


def attend_v1(w_msa: nn.Module, windows: Tensor, bias: Tensor, mask: Optional[Tensor]) -> Tensor:
    """mmdet's/mmseg's ``WindowMSA`` computation with an explicit bias (heads, n, n)."""
    B_, n, C = windows.shape
    heads = w_msa.num_heads
    q, k, v = w_msa.qkv(windows).reshape(B_, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
    attn = (q * w_msa.scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
    return attend_windows(w_msa, attn, v, mask)


def swin_block_clustered(block: nn.Module, x: Tensor, hw: Tuple[int, int], window_size: int,
                         shift_size: int, mask_shift: int) -> Tensor:
    """An mmdet/mmseg ``SwinBlock`` (pre-norm) on ``hw`` with window k and its shift."""
    w_msa = block.attn.w_msa

    def inner(x: Tensor) -> Tensor:
        bias = window_bias_v1(w_msa, window_size)
        y = shifted_window_attention(block.norm1(x), hw, window_size, shift_size,
                                     lambda windows, mask: attend_v1(w_msa, windows, bias, mask),
                                     mask_shift)
        x = x + block.attn.drop(y)
        return block.ffn(block.norm2(x), identity=x)

    return checkpointed(block, inner, x)


class WindowExpediteMixin(ExpediteMixin):
    """Window clustering in one stage of a windowed backbone (Swin, SwinV2).

    For backbones built as ``self.stages[i].blocks[j]`` whose ``attn`` is a shifted-window
    attention (``window_size``, ``shift_size``, ``w_msa``), as mmdet's, mmseg's and
    mmpretrain's are. Takes the stock arguments plus those of
    :data:`~expedite_mm.core.args.WINDOWED_STAGE`. Subclasses name
    ``expedited_stage_class``: a subclass of the stock stage class (with
    :class:`ExpeditedStageMixin` first) that replaces the expedited stage at build time.

    The clustered blocks run with window k and shift k // 2 (for the blocks that shift);
    Swin's relative-position-bias tables are bilinearly resized from (2K-1)^2 to (2k-1)^2
    rows on every call (never written into the parameters), SwinV2's continuous bias is
    computed for window k.
    """

    expedite_family = WINDOWED_STAGE
    expedited_stage_class: ClassVar[type]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        windows, stages = self.expedite_args.windows, self.expedite_args.stages
        stage = self.stages[stages.index_among(len(self.stages))]
        window_size = stage.blocks[0].attn.window_size
        k = windows.resolve_k(window_size)      # default 12 -> 8 (the paper's Swin)
        self.expedited_stage, self.window_size, self.clustered_window_size = stages.stage, window_size, k
        self._setup_expedite(len(stage.blocks), (k, k),
                             what=f"blocks of stage {stages.stage}", allowed_reducers=GRID_REDUCERS)
        if self.expedited:
            self.stages[stages.stage] = self.expedited_stage_class(stage, StagePlan(
                self.cluster_after, self.reconstruct_after, window_size, k,
                windows.cluster_padding, self.expedite_args.shifts.attention_mask_shift,
                self.clustering, self.reconstruction, type(self).__name__))


class SwinStageMixin(ExpeditedStageMixin):
    """For mmdet's / mmseg's ``SwinBlockSequence``: blocks, then patch merging."""

    clustered_block = staticmethod(swin_block_clustered)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]):
        out = self.expedited_blocks(x, hw_shape)
        if out is None:
            return super().forward(x, hw_shape)
        if self.downsample:
            x_down, down_hw = self.downsample(out, hw_shape)
            return x_down, down_hw, out, hw_shape
        return out, hw_shape, out, hw_shape


__all__ = ["StagePlan", "SwinStageTokens", "WindowExpediteMixin", "ExpeditedStageMixin",
           "SwinStageMixin", "swin_block_clustered", "attend_v1", "window_bias_v1",
           "checkpointed"]
