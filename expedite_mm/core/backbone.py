"""What every expedited backbone shares: its arguments, its operators, its forward.

An expedited backbone is ``class Expedited<X>(ExpediteMixin, <stock X>)`` with a family
(:class:`~expedite_mm.core.args.ArgsFamily`: which arguments it takes) and an adapter
(:class:`~expedite_mm.core.hourglass.TokenAdapter`: how its tokens and layers plug into
the loop). The mixin takes the expedite arguments out of ``__init__``'s keywords before
the stock ``__init__`` runs, validates them (also when expediting is disabled, so a bad
value never waits until it is switched on), builds the operator pair and runs the loop.
Pure torch.
"""
from __future__ import annotations

from typing import Any, ClassVar, List, Optional, Sequence, Tuple, Type

from torch import Tensor, nn

from ..ops.cluster import GridSpec
from ..compat import FULLGRAPH_COMPILE
from ..ops.reducers import REDUCERS
from .args import DENSE_VIT, ArgsFamily, ExpediteArgs
from .hourglass import TokenAdapter, run_hourglass, warn_fallback


class ExpediteMixin:
    """Expedite arguments, operators and the expedited forward of a backbone.

    Class attributes: ``expedite_family`` (the arguments it takes) and ``adapter`` (its
    :class:`TokenAdapter`). After the stock ``__init__`` the subclass calls
    :meth:`_setup_expedite` with its depth and cluster budget. Attributes:
    ``expedite_args`` (validated), ``cluster_after`` / ``reconstruct_after`` (``None``
    when disabled; ``reconstruct_after`` also where the backbone never reconstructs),
    ``clustering`` / ``reconstruction`` (the operator pair, ``None`` when disabled),
    ``reducer_type`` / ``reconstructor_type``, ``expedite_depth`` (the layers
    ``cluster_after`` counts in: all of a plain ViT's, the blocks of a hierarchical
    backbone's expedited stage; also when disabled).
    """

    expedite_family: ClassVar[ArgsFamily] = DENSE_VIT
    adapter: ClassVar[Type[TokenAdapter]]
    expedite_args: ExpediteArgs
    clustering: Optional[nn.Module]
    reconstruction: Optional[nn.Module]
    reducer_type: Optional[str] = None
    reconstructor_type: Optional[str] = None
    expedite_depth: int

    def __init__(self, *args, **kwargs) -> None:
        expedite_args = self.expedite_family.pop_from(kwargs)
        super().__init__(*args, **kwargs)
        self.expedite_args = expedite_args

    def _setup_expedite(self, depth: int, grid: GridSpec, what: str = "layers",
                        allowed_reducers: Sequence[str] = tuple(REDUCERS)) -> None:
        args = self.expedite_args
        self.expedite_depth = depth
        self.cluster_after, self.reconstruct_after = args.span(depth, what)
        # Built even when disabled, so that bad reducer options fail now; parameter-free.
        operators = args.build_operators(grid, allowed_reducers)
        if self.cluster_after is None:
            self.clustering = self.reconstruction = None
            return
        (self.reducer_type, self.clustering, self.reconstructor_type,
         self.reconstruction) = operators

    def _check_class_token(self, has_class_token: bool) -> None:
        """EViT ranks tokens by the class token's attention: refuse it without one."""
        if "cls_attention" in getattr(self.clustering, "needs", ()) and not has_class_token:
            raise ValueError("reducer=dict(type='EViT') scores tokens by the class token's "
                             "attention, but with_cls_token=False; set reducer.score='norm' "
                             "(token-norm proxy) or use another reducer")

    @property
    def expedited(self) -> bool:
        return self.clustering is not None

    def _expedited_outputs(self, inputs: Tensor, out_indices: Sequence[int],
                           origin: bool = False) -> Optional[Tuple[List[Any], Any]]:
        """``(outputs, state)`` of the loop on ``inputs`` (state: the clustering state
        where the outputs stay on the centres), or ``None`` -- with one warning per model
        -- for an input too small to cluster, which runs the stock forward instead."""
        adapter = _new_adapter(self)
        x, hw = adapter.embed(inputs)
        clustered = adapter.too_small(hw)
        if clustered is not None:
            warn_fallback(self, hw, clustered)
            return None
        outs, state, _ = run_hourglass(adapter, x, hw, self.cluster_after,
                                       self.reconstruct_after, out_indices, origin)
        return outs, state


def _new_adapter(model: nn.Module) -> TokenAdapter:
    """The model's token adapter for one call (it caches per-call values, so never shared)."""
    return model.adapter(model)


if not FULLGRAPH_COMPILE:
    # torch < 2.3's dynamo cannot trace constructing the adapter (it looks for the class's
    # __code__): construct it outside the graph there (a graph break, as the operators have).
    # torch.compiler.disable imports torch._dynamo; on torch 2.1 mmengine.model, which every
    # OpenMMLab model imports, already has (measured), so only the pure-torch API pays it.
    import torch
    _new_adapter = torch.compiler.disable(_new_adapter)


__all__ = ["ExpediteMixin"]
