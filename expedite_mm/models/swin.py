"""Window clustering inside one stage of a Swin-style backbone (``docs/method.md``, Swin).

No OpenMMLab import here; the registered classes live in ``swin_mmdet.py`` /
``swin_mmseg.py`` (mmdet's and mmseg's ``SwinTransformer``) and ``swinv2.py``
(mmpretrain's ``SwinTransformerV2``) and bring the stock base classes.

Set up once, at ``__init__`` (ToMe-style): the expedited stage's class is swapped for a
subclass of its own class whose ``forward`` runs :meth:`WindowPlan.forward_blocks`;
nothing is patched per call and no module attribute or parameter is ever written in a
forward, so forwards are reentrant and thread-safe. The blocks before clustering and after
reconstruction are called as they are; the clustered blocks run through
:func:`swin_block_clustered` -- the stock block's own submodules (norms, qkv, projection,
FFN) around a window-k attention (:func:`~expedite_mm.ops.window.shifted_window_attention`)
whose position bias is derived from the block's parameters on every call (the bilinearly
resized table for Swin, the continuous position bias for SwinV2: microseconds, so nothing
is cached and new weights take effect at once).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..ops.reducers import GRID_REDUCERS
from ..ops.window import (cluster_windows, clustered_window_hw, reconstruct_windows,
                          relative_position_index, resize_bias_table, shifted_window_attention,
                          validate_clustered_window_size)
from .expedite import DEFAULT_GRID, ExpediteMixin, WindowExpediteArgs

# (block, x (B, H*W, C), hw, window, shift, mask_shift) -> (B, H*W, C)
ClusteredBlock = Callable[[nn.Module, Tensor, Tuple[int, int], int, int, int], Tensor]


@dataclass
class WindowPlan:
    """Everything the expedited stage needs, fixed at build time.

    cluster_after / reconstruct_after: blocks of the stage (1-based, as documented in
    :class:`~expedite_mm.models.expedite.WindowExpediteArgs`); window_size: K;
    clustered_window_size: k; cluster_padding, attention_mask_shift: see the arguments;
    clustering / reconstruction: the operator pair (parameter-free modules); owner: the
    backbone's class name, for the fallback warning.
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
    fallback_warned: bool = False

    def clustered_hw(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        k = self.clustered_window_size
        return clustered_window_hw(hw, self.window_size, (k, k), self.cluster_padding)

    def fits(self, hw: Tuple[int, int]) -> bool:
        """True if clustering the ``hw`` map gives fewer tokens; otherwise warns once."""
        clustered = self.clustered_hw(hw)
        if clustered[0] * clustered[1] < hw[0] * hw[1]:
            return True
        if not self.fallback_warned:
            self.fallback_warned = True
            warnings.warn(f"{self.owner}: clustering the {tuple(hw)} token map into windows "
                          f"would give a {clustered[0]}x{clustered[1]} map, not fewer tokens; "
                          f"running the stock stage for such inputs", RuntimeWarning,
                          stacklevel=4)
        return False

    def forward_blocks(self, blocks: nn.ModuleList, x: Tensor, hw: Tuple[int, int],
                       run_clustered: ClusteredBlock) -> Tensor:
        """The blocks of the stage: (B, H*W, C) -> (B, H*W, C).

        Blocks ``cluster_after + 1 .. reconstruct_after`` run on the clustered map through
        ``run_clustered`` with window k and shift k // 2 where the stock block shifts.
        """
        k = self.clustered_window_size
        state = None
        if self.cluster_after == 0:
            x, state = self._cluster(x, hw)
        for number, block in enumerate(blocks, start=1):
            if state is None:
                x = block(x, hw)
            else:
                stock_shift = block.attn.shift_size
                shift = k // 2 if stock_shift > 0 else 0
                mask_shift = stock_shift if self.attention_mask_shift == "stock" else shift
                x = run_clustered(block, x, state.clustered_hw, k, shift, mask_shift)
            if number == self.cluster_after:
                x, state = self._cluster(x, hw)
            elif number == self.reconstruct_after:
                x, state = reconstruct_windows(self.reconstruction, x, state), None
        return x

    def _cluster(self, x: Tensor, hw: Tuple[int, int]):
        return cluster_windows(self.clustering, x, hw, self.window_size, pad=self.cluster_padding)


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
    if mask is not None:
        nW = mask.shape[0]
        attn = (attn.view(B_ // nW, nW, heads, n, n) + mask[None, :, None]).view(B_, heads, n, n)
    attn = w_msa.attn_drop(w_msa.softmax(attn))
    return w_msa.proj_drop(w_msa.proj((attn @ v).transpose(1, 2).reshape(B_, n, C)))


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
    mmpretrain's are. Takes the stock arguments plus
    :class:`~expedite_mm.models.expedite.WindowExpediteArgs`. Subclasses name
    ``expedited_stage_class``: a subclass of the stock stage class (with
    :class:`ExpeditedStageMixin` first) that the expedited stage becomes at build time.
    """

    expedite_args_class = WindowExpediteArgs
    expedited_stage_class: type

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        args = self.expedite_args
        depths = [len(stage.blocks) for stage in self.stages]
        if args.stage >= len(depths):
            raise ValueError(f"stage must be an int in [0, {len(depths) - 1}] (0-based index "
                             f"of the stage to expedite), got {args.stage}")
        stage = self.stages[args.stage]
        window_size = stage.blocks[0].attn.window_size
        k = args.clustered_window_size
        if k is None:   # the ViT default ratio per window side: 12 -> 8 (the paper's Swin)
            k = max(1, round(DEFAULT_GRID * window_size))
        k = validate_clustered_window_size(k, window_size)
        self.expedited_stage, self.window_size, self.clustered_window_size = args.stage, window_size, k
        self._setup_expedite(depths[args.stage], (k, k), what=f"blocks of stage {args.stage}",
                             allowed_reducers=GRID_REDUCERS)
        if self.expedited:
            if type(stage) not in self.expedited_stage_class.__bases__:
                raise TypeError(f"{type(self).__name__} expedites stages of class "
                                f"{self.expedited_stage_class.__bases__[-1].__name__}, got "
                                f"{type(stage).__name__}")
            stage.__class__ = self.expedited_stage_class
            stage.expedite_plan = WindowPlan(
                self.cluster_after, self.reconstruct_after, window_size, k,
                args.cluster_padding, args.attention_mask_shift, self.clustering,
                self.reconstruction, type(self).__name__)


class ExpeditedStageMixin:
    """The expedited stage's ``forward``: mixed into a subclass of the stock stage class.

    ``expedite_plan`` (a :class:`WindowPlan`) is set on the instance at build time;
    ``clustered_block`` runs one of the stage's blocks with window k.
    """

    expedite_plan: WindowPlan
    clustered_block: ClusteredBlock = staticmethod(swin_block_clustered)

    def expedited_blocks(self, x: Tensor, hw: Tuple[int, int]) -> Optional[Tensor]:
        """The stage's blocks with clustering; ``None`` if ``hw`` is too small to cluster."""
        if not self.expedite_plan.fits(hw):
            return None
        return self.expedite_plan.forward_blocks(self.blocks, x, hw, self.clustered_block)


class SwinStageMixin(ExpeditedStageMixin):
    """For mmdet's / mmseg's ``SwinBlockSequence``: blocks, then patch merging."""

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]):
        out = self.expedited_blocks(x, hw_shape)
        if out is None:
            return super().forward(x, hw_shape)
        if self.downsample:
            x_down, down_hw = self.downsample(out, hw_shape)
            return x_down, down_hw, out, hw_shape
        return out, hw_shape, out, hw_shape


class SwinExpediteMixin(WindowExpediteMixin):
    """Window token clustering for mmdet's / mmseg's ``SwinTransformer`` (one implementation).

    Takes every stock argument, with the same state-dict keys, plus the expedite arguments
    of :class:`~expedite_mm.models.expedite.WindowExpediteArgs` (``stage``,
    ``cluster_after``, ``reconstruct_after``, ``clustered_window_size``,
    ``cluster_padding``, ``attention_mask_shift``, and the operator settings).

    The clustered blocks run with window k and shift k // 2 (for the blocks that shift),
    their relative-position-bias tables bilinearly resized from (2K-1)^2 to (2k-1)^2 rows
    on every call (never written into the parameters).
    """


__all__ = ["WindowPlan", "WindowExpediteMixin", "ExpeditedStageMixin", "SwinStageMixin",
           "SwinExpediteMixin", "swin_block_clustered", "attend_v1", "window_bias_v1",
           "checkpointed"]
