"""The method's forward, written once for every backbone family (``docs/method.md`` §4)::

    tokens ── layers 1..α ──▶ cluster ──▶ layers α+1..α+β on the centres ──▶ reconstruct ──▶ layers α+β+1..L

:func:`run_hourglass` is that loop. A family plugs in through a thin
:class:`TokenAdapter`: its embedding (the stock forward's first lines), how its tokens are
laid out (class / register tokens kept aside; one grid, :class:`GridTokens`, or
attention windows, :class:`WindowTokens`), how one of its layers runs on the centres (a
window size, a position bias), and what its outputs look like. The adapter is made per
forward around the backbone and keeps nothing beyond that forward.

Every requested output index is served: outputs taken before α are dense; outputs at or
after α are reconstructed to the full token grid at that layer from the current centres
(each its own reconstruction, the multi-level rule of the Expedit-DPT release), or --
where the backbone never reconstructs (``reconstruct_after=None``: the logits placement,
classification by the class token) -- stay on the centres. Pure torch.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..ops.cluster import can_cluster, resolve_grid
from ..ops.reducers import KeepState
from ..ops.window import cluster_windows, reconstruct_windows

HW = Tuple[int, int]


class TokenAdapter:
    """How one backbone family plugs into :func:`run_hourglass` (subclass per family).

    ``model`` is the expedited backbone, which holds the operator pair (``clustering``,
    ``reconstruction``). ``state`` below is ``None`` while all tokens are present, else
    what clustering returned.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def embed(self, inputs: Tensor) -> Tuple[Tensor, HW]:
        """Images -> the first layer's input, exactly as the stock forward, and the token grid."""
        raise NotImplementedError

    def layers(self) -> Sequence[nn.Module]:
        return self.model.layers

    def too_small(self, hw: HW) -> Optional[str]:
        """What clustering ``hw`` tokens would give and why the layers cannot take it (not
        fewer tokens), or None where they can."""
        raise NotImplementedError

    def layer(self, index: int, layer: nn.Module, x: Tensor, state: Any) -> Tensor:
        """One layer; on the centres where ``state`` is set (default: as it is)."""
        return layer(x)

    def after_layer(self, index: int, x: Tensor) -> Tensor:
        """What follows layer ``index`` in the stock forward (e.g. the final norm)."""
        return x

    def cluster(self, x: Tensor, hw: HW) -> Tuple[Tensor, Any]:
        raise NotImplementedError

    def reconstruct(self, x: Tensor, state: Any) -> Tensor:
        raise NotImplementedError

    def output(self, x: Tensor, hw: HW) -> Any:
        """Tokens on an ``hw`` map -> the stock output format."""
        raise NotImplementedError

    def output_on_centres(self, x: Tensor, state: Any) -> Any:
        """An output that stays on the centres (backbones that never reconstruct)."""
        return self.output(x, state.grid)


class GridTokens(TokenAdapter):
    """Plain-ViT layout: ``(B, extra + H*W, C)``, the extra (class / register) tokens
    first; they are kept aside while the patch tokens are clustered and reconstructed."""

    extra_tokens: int = 0

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._weights: Optional[Tuple[Any, Any]] = None   # (state, its k-NN weights)

    def too_small(self, hw: HW) -> Optional[str]:
        if can_cluster(self.model.clustering.grid, hw):
            return None
        h, w = resolve_grid(self.model.clustering.grid, hw)
        return f"{h}x{w} centres, not fewer tokens"

    def split(self, x: Tensor) -> Tuple[Optional[Tensor], Tensor]:
        n = self.extra_tokens
        return (x[:, :n], x[:, n:]) if n else (None, x)

    @staticmethod
    def join(extra: Optional[Tensor], tokens: Tensor) -> Tensor:
        return tokens if extra is None else torch.cat((extra, tokens), dim=1)

    def guide(self, x: Tensor) -> dict:
        """What the reducer needs besides the tokens (``clustering.needs``: class-token
        attention, keys), from the first layer after clustering applied to ``x``."""
        return {}

    def cluster(self, x: Tensor, hw: HW) -> Tuple[Tensor, Any]:
        extra, tokens = self.split(x)
        guide = self.guide(x) if getattr(self.model.clustering, "needs", ()) else {}
        centers, state = self.model.clustering(tokens, hw, **guide)
        return self.join(extra, centers), state

    def reconstruct(self, x: Tensor, state: Any) -> Tensor:
        extra, centers = self.split(x)
        return self.join(extra, self.reconstruct_tokens(centers, state))

    def reconstruct_tokens(self, centers: Tensor, state: Any) -> Tensor:
        """The reconstructor on (B, M, C) values; the method's k-NN weights are computed
        once per clustering state in this forward (several outputs reconstruct from it)."""
        reconstruction = self.model.reconstruction
        if not hasattr(reconstruction, "weights"):
            return reconstruction(centers, state)
        if self._weights is None or self._weights[0] is not state:
            self._weights = (state, reconstruction.weights(state))
        return reconstruction(centers, state, weights=self._weights[1])


class WindowTokens(TokenAdapter):
    """Windowed layout: a ``(B, H*W, C)`` map attended within ``K x K`` windows, each
    clustered to ``k x k`` centres on its own (:func:`~expedite_mm.ops.window.cluster_windows`).
    ``model`` has ``window_size`` (K), ``cluster_padding`` and ``clustered_hw(hw)``, the
    map of centres it clusters an ``hw`` map to."""

    def too_small(self, hw: HW) -> Optional[str]:
        h, w = self.model.clustered_hw(hw)
        return None if h * w < hw[0] * hw[1] else (f"a {h}x{w} map of window centres, not "
                                                    f"fewer tokens")

    def cluster(self, x: Tensor, hw: HW) -> Tuple[Tensor, Any]:
        return cluster_windows(self.model.clustering, x, hw, self.model.window_size,
                               pad=self.model.cluster_padding)

    def reconstruct(self, x: Tensor, state: Any) -> Tensor:
        return reconstruct_windows(self.model.reconstruction, x, state)


def run_hourglass(adapter: TokenAdapter, x: Tensor, hw: HW, cluster_after: int,
                  reconstruct_after: Optional[int], out_indices: Iterable[int] = (),
                  origin: bool = False, layers: Optional[Sequence[nn.Module]] = None
                  ) -> Tuple[List[Any], Any, Tensor]:
    """The expedited layers: ``layers`` (default ``adapter.layers()``) on ``x``.

    Args:
        adapter: the family's adapter around the backbone.
        x: the first layer's input on the ``hw`` token grid.
        cluster_after: alpha, layers before clustering (0: before the first).
        reconstruct_after: alpha + beta, the layer after which the tokens are restored;
            ``None``: never (later layers and outputs stay on the centres).
        out_indices: 0-based layers whose outputs are returned.
        origin: whether the embedding (before the first layer) is returned first.
        layers: the layers to run (default: ``adapter.layers()``).

    Returns:
        ``(outputs, state, x)``: the outputs in layer order, the clustering state if the
        tokens are still on the centres at the end (else None), the last layer's tokens.
    """
    layers = adapter.layers() if layers is None else layers
    out_indices = set(out_indices)
    outs: List[Any] = []
    state = None
    if origin:
        outs.append(adapter.output(x, hw))
    if cluster_after == 0:
        x, state = adapter.cluster(x, hw)
    for index, layer in enumerate(layers):
        x = adapter.after_layer(index, adapter.layer(index, layer, x, state))
        if index + 1 == reconstruct_after:
            if isinstance(state, KeepState):   # EViT: the tokens that skipped the layers
                state = state.map_fill(lambda fill: adapter.after_layer(index, fill))
            x, state = adapter.reconstruct(x, state), None
        if index in out_indices:
            if state is None:
                outs.append(adapter.output(x, hw))
            elif reconstruct_after is None:
                outs.append(adapter.output_on_centres(x, state))
            else:
                outs.append(adapter.output(adapter.reconstruct(x, state), hw))
        if index + 1 == cluster_after:
            x, state = adapter.cluster(x, hw)
    return outs, state, x


# --------------------------------------------------------------------------- fallback
# The models that have warned about falling back to the stock forward: one warning per
# model (the warnings module's own once-registry is per call site). Nothing is written
# on the model; an entry goes with its model.
_WARNED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def warn_fallback(model: nn.Module, hw: HW, clustered: str, owner: Optional[str] = None) -> None:
    """Warn (once per ``model``) that clustering ``hw`` tokens would give ``clustered``
    (the adapter's ``too_small``), which the layers cannot take (``owner``: the backbone's
    name, where ``model`` is one of its stages)."""
    if model in _WARNED:
        return
    _WARNED.add(model)
    warnings.warn(f"{owner or type(model).__name__}: clustering the token grid {tuple(hw)} "
                  f"would give {clustered}; running the stock (unexpedited) forward for such "
                  f"inputs", RuntimeWarning, stacklevel=4)


__all__ = ["TokenAdapter", "GridTokens", "WindowTokens", "run_hourglass", "warn_fallback"]
