"""Window clustering inside one stage of a Swin-style backbone (SPEC section 2, Swin).

Two mixins, no OpenMMLab import (the registered classes live in ``swin_mmdet.py`` /
``swin_mmseg.py`` and bring the stock base class):

* :class:`WindowExpediteMixin` -- model independent, shared with ``ExpeditedSwinV2``:
  the expedite arguments and their validation, the forward (the stock one with the
  expedited stage's forward swapped for the call), the block loop of the expedited stage
  (cluster after ``cluster_after`` blocks, run the next blocks on the clustered map with
  window k and shift k//2, reconstruct after ``reconstruct_after``), running a stock block
  with temporarily swapped window attributes and position tensors, and a cache for
  tensors derived from parameters (the resized bias tables).
* :class:`SwinExpediteMixin` -- mmdet's and mmseg's ``SwinTransformer`` (identical code):
  their position tensors for window k (table resized bilinearly, index rebuilt; the stock
  ``ShiftWindowMSA`` rebuilds its shift mask for the new window itself) and their stage.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..ops import resolve_grid
from ..ops.reducers import GRID_REDUCERS
from ..ops.window import (DEFAULT_WINDOW_K, cluster_windows, reconstruct_windows,
                          relative_position_index, resize_bias_table,
                          validate_clustered_window_size)
from .expedite import (DEFAULT_GRID, DEFAULT_ITERS, DEFAULT_TEMPERATURE, DEFAULT_WINDOW,
                       ExpediteMixin)

BlockRunner = Callable[[nn.Module, Tensor, Tuple[int, int]], Tensor]


@contextlib.contextmanager
def swapped_attributes(changes: Sequence[Tuple[object, str, object]]) -> Iterator[None]:
    """Temporarily set plain (non-tensor) attributes, e.g. a block's window size."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in changes]
    try:
        for obj, name, value in changes:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


@contextlib.contextmanager
def swapped_tensors(module: nn.Module, tensors: Dict[str, Tensor]) -> Iterator[None]:
    """Temporarily replace named parameters/buffers of ``module`` (dotted names) by tensors.

    The entries of the owning modules' ``_parameters`` / ``_buffers`` are swapped and put
    back afterwards; the Parameter objects themselves are never written. (What
    ``torch.func.functional_call`` does, which refuses to run under ``torch.jit.trace``,
    and so under fvcore.)
    """
    saved = []
    try:
        for name, tensor in tensors.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            table = owner._parameters if leaf in owner._parameters else owner._buffers
            saved.append((table, leaf, table[leaf]))
            table[leaf] = tensor
        yield
    finally:
        for table, leaf, original in reversed(saved):
            table[leaf] = original


def run_block_with(block: nn.Module, args: tuple, attributes: Sequence[Tuple[object, str, object]],
                   tensors: Dict[str, Tensor]) -> Tensor:
    """``block(*args)`` with ``attributes`` swapped and the named parameters/buffers replaced
    by ``tensors`` for this call only: the module's own parameters, buffers and
    ``state_dict()`` are never written.

    A block that checkpoints itself (``with_cp``) would recompute in backward after the
    swap is undone, so it is checkpointed here, around the swap, instead.
    """
    with_cp = bool(getattr(block, "with_cp", False))

    def run(*inputs):
        changes = list(attributes) + ([(block, "with_cp", False)] if with_cp else [])
        with swapped_attributes(changes), swapped_tensors(block, tensors):
            return block(*inputs)

    if with_cp and torch.is_grad_enabled() and args[0].requires_grad:
        return checkpoint(run, *args, use_reentrant=False)
    return run(*args)


@functools.lru_cache(maxsize=16)
def cached_position_index(window_size: int, device: str) -> Tensor:
    return relative_position_index(window_size, torch.device(device))


class WindowExpediteMixin(ExpediteMixin):
    """Window clustering in one stage of a windowed backbone (Swin, SwinV2).

    For backbones built as ``self.stages[i].blocks[j]`` whose ``attn`` is a shifted-window
    attention (``window_size``, ``shift_size`` and a ``w_msa`` with ``window_size``), as
    mmdet's, mmseg's and mmpretrain's are. Takes the stock arguments plus those documented
    on :class:`SwinExpediteMixin`. ``cluster_after`` / ``reconstruct_after`` count blocks of
    stage ``stage`` (0-based, like ``out_indices``). The blocks in between run on the
    clustered map with window ``clustered_window_size`` (k); the subclass gives their
    position tensors (``_window_k_tensors``) and the stage's forward
    (``_expedited_stage_forward``).
    """

    expedited_stage: int
    window_size: int
    clustered_window_size: int

    def __init__(self, *args, stage: int = 2, cluster_after: Optional[int] = None,
                 reconstruct_after: Optional[int] = None,
                 clustered_window_size: Optional[int] = None,
                 cluster_window: int = DEFAULT_WINDOW, cluster_iters: int = DEFAULT_ITERS,
                 temperature: float = DEFAULT_TEMPERATURE,
                 reconstruct_k: int = DEFAULT_WINDOW_K, reconstruct_normalize: str = "sum",
                 reconstruct_neighbours: str = "global",
                 reducer: Optional[dict] = None, reconstructor: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        depths = [len(stage_module.blocks) for stage_module in self.stages]
        if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < len(depths):
            raise ValueError(f"stage must be an int in [0, {len(depths) - 1}] (0-based "
                             f"index of the stage to expedite), got {stage!r}")
        window_size = self.stages[stage].blocks[0].attn.window_size
        if clustered_window_size is None:
            # the ViT default ratio, per window side: 12 -> 8 (the paper's Swin setting)
            clustered_window_size = resolve_grid(DEFAULT_GRID, (window_size, window_size))[0]
        k = validate_clustered_window_size(clustered_window_size, window_size)
        self.expedited_stage, self.window_size, self.clustered_window_size = stage, window_size, k
        self._derived: Dict[str, Tuple[tuple, Tensor]] = {}
        self._init_expedite(depths[stage], cluster_after, reconstruct_after, (k, k),
                            cluster_window, cluster_iters, temperature, reconstruct_k,
                            reconstruct_normalize, reconstruct_neighbours,
                            what=f"blocks of stage {stage}", reducer=reducer,
                            reconstructor=reconstructor, allowed_reducers=GRID_REDUCERS)

    def forward(self, x: Tensor):
        if not self.expedited:
            return super().forward(x)
        # The stock forward, with the expedited stage's forward replaced for this call only
        # (an instance attribute shadows the class method; no module or key changes).
        stage = self.stages[self.expedited_stage]
        stage.forward = functools.partial(self._expedited_stage_forward, stage)
        try:
            return super().forward(x)
        finally:
            del stage.forward

    def _expedited_stage_forward(self, stage: nn.Module, *args):
        """Replaces the expedited stage's ``forward`` (same inputs and outputs)."""
        raise NotImplementedError

    def _window_k_tensors(self, index: int, block: nn.Module, k: int,
                          device: torch.device) -> Dict[str, Tensor]:
        """Block ``index``'s position tensors for window k, by their names in the block."""
        raise NotImplementedError

    def _run_block_clustered(self, index: int, block: nn.Module, x: Tensor,
                             hw: Tuple[int, int]) -> Tensor:
        """Run block ``index`` of the stage, with window ``clustered_window_size`` (shift
        k//2 where it shifts), on the clustered ``hw`` map (a multiple of the window)."""
        k = self.clustered_window_size
        attn = block.attn
        attributes = [(attn, "window_size", k),
                      (attn, "shift_size", k // 2 if attn.shift_size > 0 else 0),
                      (attn.w_msa, "window_size", (k, k))]
        return run_block_with(block, (x, hw), attributes,
                              self._window_k_tensors(index, block, k, x.device))

    def _expedited_blocks(self, blocks: Sequence[nn.Module], x: Tensor, hw: Tuple[int, int],
                          run_block: BlockRunner) -> Tensor:
        """The blocks of the expedited stage: (B, H*W, C) -> (B, H*W, C).

        ``run_block(block, x, hw)`` runs a block as the stock stage does; blocks
        ``cluster_after+1 .. reconstruct_after`` run through ``_run_block_clustered`` on the
        clustered ``(Hp/K*k) x (Wp/K*k)`` map.
        """
        state = None
        if self.cluster_after == 0:
            x, state = cluster_windows(self.clustering, x, hw, self.window_size)
        for number, block in enumerate(blocks, start=1):
            if state is None:
                x = run_block(block, x, hw)
            else:
                x = self._run_block_clustered(number - 1, block, x, state.clustered_hw)
            if number == self.cluster_after:
                x, state = cluster_windows(self.clustering, x, hw, self.window_size)
            elif number == self.reconstruct_after:
                x, state = reconstruct_windows(self.reconstruction, x, state), None
        return x

    def _derived_tensor(self, name: str, source: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """``compute(source)``, cached under ``name`` while ``source`` is unchanged.

        The cache is a plain dict (not a buffer: never in ``state_dict()``), keyed by the
        source's storage, version counter (bumped by in-place writes such as
        ``load_state_dict`` or an optimizer step), device and dtype. With autograd
        recording through ``source`` nothing is cached, so gradients reach the parameter.
        """
        if torch.is_grad_enabled() and source.requires_grad:
            return compute(source)
        key = (source.data_ptr(), source._version, source.device, source.dtype)
        cached = self._derived.get(name)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = self._derived[name] = (key, compute(source))
        return cached[1]


class SwinExpediteMixin(WindowExpediteMixin):
    """Window token clustering for mmdet's / mmseg's ``SwinTransformer`` (one implementation).

    Takes every stock argument, with the same state-dict keys, plus:

    Args:
        stage: 0-based index of the stage to expedite (default 2, the third stage).
        cluster_after: blocks of that stage before clustering (0 <= alpha < depth); ``None``
            (default) disables expediting and gives the stock backbone. The paper counts
            alpha over all blocks: its Swin-L (depths 2, 2, 18, 2) alpha=10 is
            ``stage=2, cluster_after=6``.
        reconstruct_after: the block of that stage after which every window is restored to
            ``K x K`` (default: the last one, before patch merging).
        clustered_window_size: k, the side of a clustered window (1 <= k <= K; default
            ``round(0.7 * K)``, 8 for K=12).
        cluster_window: odd side of the EM neighbourhood (lambda = window x window cells).
        cluster_iters: EM iterations. temperature: tau of both layers.
        reconstruct_k: centres of its own window per reconstructed token (default 10).
        reconstruct_normalize: ``"sum"`` (paper) or ``"l2"`` (released code).
        reconstruct_neighbours: ``"global"`` (top-k of the window's centres) or ``"local"``.
        reducer / reconstructor: ``dict(type='AvgPool')`` / ``dict(type='Bilinear')`` run
            the paper's grid baselines per window at the same k x k budget (``None``: the
            method); EViT/ToMe keep no grid and are rejected.

    The clustered blocks run with window k and shift k//2 (for the blocks that shift),
    their bias tables bilinearly resized from (2K-1)^2 to (2k-1)^2 rows; the resized tables
    are cached per block and never written into the parameters.
    """

    def _expedited_stage_forward(self, stage: nn.Module, x: Tensor, hw: Tuple[int, int]):
        """Replaces ``SwinBlockSequence.forward``: same inputs, same 4-tuple out."""
        if not self._can_expedite(hw):
            return type(stage).forward(stage, x, hw)
        x = self._expedited_blocks(stage.blocks, x, hw, lambda block, x, hw: block(x, hw))
        if stage.downsample:
            x_down, down_hw = stage.downsample(x, hw)
            return x_down, down_hw, x, hw
        return x, hw, x, hw

    def _window_k_tensors(self, index: int, block: nn.Module, k: int,
                          device: torch.device) -> Dict[str, Tensor]:
        w_msa = block.attn.w_msa
        return {
            "attn.w_msa.relative_position_bias_table": self._derived_tensor(
                f"blocks.{index}.bias_table", w_msa.relative_position_bias_table,
                lambda table: resize_bias_table(table, k)),
            "attn.w_msa.relative_position_index": cached_position_index(k, str(device)),
        }
