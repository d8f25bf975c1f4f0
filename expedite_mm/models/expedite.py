"""The expedite arguments -- one definition for every backbone -- and what backbones share.

Pure torch (the mm-specific wrappers live next to this file). :class:`ExpediteArgs` (plain
ViTs), :class:`WindowExpediteArgs` (Swin, SwinV2) and :class:`WindowViTExpediteArgs` (SAM's
windowed ViT) hold every argument's name, default, validation and documentation;
:class:`ExpediteMixin` takes them out of a backbone's keyword arguments before the stock
``__init__`` runs, validates them (also when expediting is disabled, so a bad value never
waits until it is switched on) and builds the two operators. See ``docs/method.md`` for
what the operators compute.
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

from ..ops.cluster import (DEFAULT_ITERS, DEFAULT_K, DEFAULT_TEMPERATURE, DEFAULT_WINDOW,
                           NEIGHBOURS, NORMALIZATIONS, TIES, GridSpec, can_cluster, resolve_grid,
                           validate_choice, validate_grid, validate_int,
                           validate_temperature, validate_window)
from ..ops.reducers import GRID_REDUCERS, REDUCERS, build_layerwise_reducer, build_reduction
from ..ops.window import DEFAULT_WINDOW_K

DEFAULT_GRID = 0.7  # 28x28 clusters for 40x40 tokens, the paper's main setting
# Expedit-SWAG's clustering temperature for ImageNet (its factor cluster_temperture=1)
DEFAULT_CLASSIFICATION_TEMPERATURE = 1.0
_CLASSIFICATION_ONLY = ("classification backbones (mmpretrain's ExpeditedVisionTransformer) "
                        "only")
PLACEMENTS = ("backbone", "logits")


def _optional_int(value: Any, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int or None, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ExpediteArgs:
    """The expedite arguments of a plain ViT backbone (``ExpeditedViT`` and its kin).

    Every expedited backbone takes its stock arguments plus these, as flat keyword
    arguments (config keys). Values are validated when the backbone is built, whether or
    not expediting is enabled; ints may be any integral type (e.g. numpy's).

    Args:
        cluster_after: alpha, the number of layers before clustering
            (``0 <= alpha < depth``); ``None`` (default) disables expediting: the backbone
            is the stock one, bit for bit.
        reconstruct_after: alpha + beta, the layer after which the tokens are restored to
            full resolution (``alpha < . <= depth``; default: the last layer, after the
            final norm). Only with ``reconstruct_placement='backbone'``.
        reconstruct_placement: where token reconstruction happens. ``'backbone'``
            (default): inside the backbone after layer ``reconstruct_after``; every output
            is at full resolution, so any neck or head works. ``'logits'``: as the
            Expedit-Segmenter release computes: the backbone never reconstructs (layers
            ``alpha+1 .. depth`` and the final norm run on the centres, every output is the
            ``h x w`` centre map), the decode head runs on that map and the segmentor
            (``ExpeditedEncoderDecoder``) reconstructs the head's class logits to the token
            grid before the usual resize. Needs a grid reducer ('Cluster', 'AvgPool') and
            a head that reads one feature map (``docs/method.md`` §4.1).
        cluster_grid: the ``h x w`` cluster centres: an int, an ``(h, w)`` pair, or a ratio
            in (0, 1] of the token grid (default 0.7: 40x40 tokens -> 28x28 centres).
        cluster_window: odd side of the ``lambda = window x window`` cells around its home
            cell that a token may join in the EM (default 5).
        cluster_iters: kappa, the EM iterations (default 5).
        temperature: tau of both layers, ``softmax(-D / tau)`` (default 50).
        reconstruct_k: the nearest centres a reconstructed token mixes (default 20).
        reconstruct_normalize: ``'sum'`` (the paper: weights sum to 1) or ``'l2'`` (the
            released code's unit L2 norm; set it to reproduce released numbers).
        reconstruct_neighbours: ``'global'`` (k nearest of all centres) or ``'local'``
            (the clustering's own ``lambda`` candidate cells; ``reconstruct_k`` unused).
        reconstruct_ties: ``'exact'`` (exactly k centres per token) or ``'keep'`` (also
            every centre whose weight ties with the k-th, as the released code's
            ``weight >= kth`` selection does).
        reducer, reconstructor: ``dict(type=...)`` to run one of the paper's comparisons
            at the same budget instead of the method (``expedite_mm.ops.reducers``:
            'AvgPool', 'EViT', 'ToMe' / 'Bilinear', 'Scatter', 'Unmerge'); ``None``
            (default) is the method, configured by the arguments above.
    """

    cluster_after: Optional[int] = None
    reconstruct_after: Optional[int] = None
    reconstruct_placement: str = "backbone"
    cluster_grid: GridSpec = DEFAULT_GRID
    cluster_window: int = DEFAULT_WINDOW
    cluster_iters: int = DEFAULT_ITERS
    temperature: float = DEFAULT_TEMPERATURE
    reconstruct_k: int = DEFAULT_K
    reconstruct_normalize: str = "sum"
    reconstruct_neighbours: str = "global"
    reconstruct_ties: str = "exact"
    reducer: Optional[Dict[str, Any]] = None
    reconstructor: Optional[Dict[str, Any]] = None

    # arguments of the other backbone family, refused with a pointer to the right one
    _other_family: ClassVar[Dict[str, str]] = {
        "clustered_window_size": "ViT backbones take cluster_grid (the h x w centres of the "
                                 "whole token grid)",
        "stage": "ViT backbones have no stages; cluster_after counts layers",
        "reconstruct": "reconstruct=False (cluster only) is for " + _CLASSIFICATION_ONLY,
        "layerwise_reducer": "layerwise_reducer is for " + _CLASSIFICATION_ONLY,
    }

    def __post_init__(self) -> None:
        set_ = object.__setattr__.__get__(self)
        if self.reconstruct_after is not None and self.cluster_after is None:
            raise ValueError("reconstruct_after is set but cluster_after is None; set "
                             "cluster_after to enable expediting")
        set_("cluster_after", _optional_int(self.cluster_after, "cluster_after"))
        set_("reconstruct_after", _optional_int(self.reconstruct_after, "reconstruct_after"))
        if self.cluster_after is not None and self.cluster_after < 0:
            raise ValueError(f"cluster_after must be >= 0, got {self.cluster_after}")
        set_("cluster_window", validate_window(self.cluster_window, "cluster_window"))
        set_("cluster_iters", validate_int(self.cluster_iters, "cluster_iters", 1))
        set_("temperature", validate_temperature(self.temperature, "temperature"))
        set_("reconstruct_k", validate_int(self.reconstruct_k, "reconstruct_k", 1))
        validate_choice(self.reconstruct_normalize, "reconstruct_normalize", NORMALIZATIONS)
        validate_choice(self.reconstruct_neighbours, "reconstruct_neighbours", NEIGHBOURS)
        validate_choice(self.reconstruct_ties, "reconstruct_ties", TIES)
        validate_choice(self.reconstruct_placement, "reconstruct_placement", PLACEMENTS)
        if self.reconstruct_placement == "logits":
            if self.reconstruct_after is not None:
                raise ValueError(f"reconstruct_after must be None with reconstruct_placement="
                                 f"'logits' (the backbone never reconstructs: layers after "
                                 f"cluster_after run on the centres), got "
                                 f"{self.reconstruct_after!r}")
            # (a malformed reducer is refused later, by build_operators)
            reducer = self.reducer.get("type") if isinstance(self.reducer, Mapping) else None
            if reducer is not None and reducer not in GRID_REDUCERS:
                raise ValueError(f"reconstruct_placement='logits' hands the decode head the h x w "
                                 f"map of the reduced tokens, which only the grid reducers "
                                 f"{GRID_REDUCERS} give; reducer type {reducer!r} needs "
                                 f"reconstruct_placement='backbone'")
        self._validate_family()

    def _validate_family(self) -> None:
        object.__setattr__(self, "cluster_grid", validate_grid(self.cluster_grid, "cluster_grid"))

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def pop_from(cls, kwargs: Dict[str, Any]) -> "ExpediteArgs":
        """Take this family's arguments out of a backbone's ``kwargs`` (in place)."""
        for name, hint in cls._other_family.items():
            if name in kwargs:
                raise ValueError(f"{name} is not an argument of this backbone: {hint}")
        return cls(**{name: kwargs.pop(name) for name in cls.names() if name in kwargs})

    def span(self, depth: int, what: str) -> Tuple[Optional[int], Optional[int]]:
        """``(cluster_after, reconstruct_after)`` checked against ``depth`` layers/blocks
        (``reconstruct_after`` defaulting to ``depth``); ``(None, None)`` when disabled."""
        if self.cluster_after is None:
            return None, None
        if not self.cluster_after < depth:
            raise ValueError(f"cluster_after must be an int in [0, {depth - 1}] (the number of "
                             f"{what} before clustering; the backbone has {depth}), "
                             f"got {self.cluster_after!r}")
        reconstruct_after = depth if self.reconstruct_after is None else self.reconstruct_after
        if not self.cluster_after < reconstruct_after <= depth:
            raise ValueError(f"reconstruct_after must be an int in [{self.cluster_after + 1}, "
                             f"{depth}] (cluster_after < reconstruct_after <= {depth} {what}), "
                             f"got {self.reconstruct_after!r}")
        return self.cluster_after, reconstruct_after

    def build_operators(self, grid: GridSpec, allowed_reducers: Sequence[str] = tuple(REDUCERS)
                        ) -> Tuple[str, nn.Module, str, nn.Module]:
        """The reducer/reconstructor pair at budget ``grid`` (see ``build_reduction``)."""
        clustering = dict(window=self.cluster_window, iters=self.cluster_iters,
                          temperature=self.temperature)
        reconstruction = dict(k=self.reconstruct_k, temperature=self.temperature,
                              normalize=self.reconstruct_normalize,
                              neighbours=self.reconstruct_neighbours,
                              ties=self.reconstruct_ties)
        return build_reduction(self.reducer, self.reconstructor, grid, clustering,
                               reconstruction, allowed=allowed_reducers)


@dataclass(frozen=True)
class WindowExpediteArgs(ExpediteArgs):
    """The expedite arguments of a windowed backbone (``ExpeditedSwin``, ``ExpeditedSwinV2``).

    Those of :class:`ExpediteArgs` (with ``cluster_after`` / ``reconstruct_after``
    counting the blocks of ``stage``, ``reconstruct_k`` defaulting to 10 and
    ``cluster_grid`` replaced by ``clustered_window_size``), plus:

    Args:
        stage: 0-based index of the stage whose windows are clustered (default 2, the
            third). The paper counts alpha over all blocks: its Swin-L (depths 2, 2, 18, 2)
            alpha=10 is ``stage=2, cluster_after=6``.
        clustered_window_size: k: every ``K x K`` window of the stage becomes ``k x k``
            centres and the clustered blocks attend within windows of k (``1 <= k <= K``;
            default ``round(0.7 * K)``, 12 -> 8).
        cluster_padding: ``True`` (default, as the release): the map is zero-padded to
            multiples of K and the padding is clustered like content. ``False``: only the
            content part of each window is clustered (a window with ``r x c`` content
            tokens gets ``ceil(r k / K) x ceil(c k / K)`` centres), so no centre is pure
            padding and the clustered blocks pad their attention windows as the stock
            blocks do.
        attention_mask_shift: ``'clustered'`` (default): the shifted clustered blocks roll
            by k // 2 and mask with the same shift. ``'stock'``: mask with the stage's own
            shift K // 2 while rolling by k // 2, as Expedit-Mask2Former's code does (set it
            to reproduce its numbers).
    """

    reconstruct_k: int = DEFAULT_WINDOW_K
    stage: int = 2
    clustered_window_size: Optional[int] = None
    cluster_padding: bool = True
    attention_mask_shift: str = "clustered"

    _other_family: ClassVar[Dict[str, str]] = {
        "cluster_grid": "windowed backbones cluster every K x K window to k x k centres; set "
                        "clustered_window_size=k instead",
        "reconstruct": "reconstruct=False (cluster only) is for " + _CLASSIFICATION_ONLY,
        "layerwise_reducer": "layerwise_reducer is for " + _CLASSIFICATION_ONLY,
        "reconstruct_placement": "windowed backbones reconstruct every window inside the "
                                 "stage (reconstruct_after); there is no logits placement",
    }

    def _validate_family(self) -> None:
        if isinstance(self.stage, bool) or not isinstance(self.stage, numbers.Integral) \
                or self.stage < 0:
            raise ValueError(f"stage must be an int >= 0 (0-based index of the stage to "
                             f"expedite), got {self.stage!r}")
        object.__setattr__(self, "stage", int(self.stage))
        size = _optional_int(self.clustered_window_size, "clustered_window_size")
        if size is not None and size < 1:
            raise ValueError(f"clustered_window_size must be an int >= 1, got {size}")
        object.__setattr__(self, "clustered_window_size", size)
        if not isinstance(self.cluster_padding, bool):
            raise ValueError(f"cluster_padding must be True or False, got {self.cluster_padding!r}")
        validate_choice(self.attention_mask_shift, "attention_mask_shift", ("clustered", "stock"))

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(name for name in super().names()
                     if name not in ("cluster_grid", "reconstruct_placement"))


@dataclass(frozen=True)
class ClassificationExpediteArgs(ExpediteArgs):
    """The expedite arguments of a classification ViT (``ExpeditedVisionTransformer``).

    Those of :class:`ExpediteArgs`, with ``temperature`` defaulting to 1 (Expedit-SWAG's
    ImageNet setting), plus:

    Args:
        reconstruct: ``False`` (default, as Expedit-SWAG): cluster only -- the layers after
            ``cluster_after`` and the final norm run on the centres and the class token is
            read from them (``reconstruct_after`` must stay unset; ``out_type`` must be
            ``'cls_token'``). ``True``: restore full resolution after ``reconstruct_after``
            (default the last layer) as the dense backbones do; every ``out_type`` works.
        layerwise_reducer: ``dict(type='EViT', ...)`` or ``dict(type='ToMe', ...)``: EViT /
            ToMe as Expedit-SWAG ran them, reducing tokens inside several layers (see
            ``expedite_mm.ops.reducers.LayerwiseTokenDropping`` / ``LayerwiseTokenMerging``
            for the options) instead of clustering; set it without ``cluster_after`` (and
            without ``reducer``). ``None`` (default): none.
    """

    temperature: float = DEFAULT_CLASSIFICATION_TEMPERATURE
    reconstruct: bool = False
    layerwise_reducer: Optional[Dict[str, Any]] = None

    _other_family: ClassVar[Dict[str, str]] = {
        name: hint for name, hint in ExpediteArgs._other_family.items()
        if name not in ("reconstruct", "layerwise_reducer")}

    def _validate_family(self) -> None:
        super()._validate_family()
        if self.reconstruct_placement != "backbone":
            raise ValueError(f"reconstruct_placement={self.reconstruct_placement!r} is for "
                             f"segmentation (ExpeditedEncoderDecoder); a classification ViT "
                             f"reads its class token (reconstruct=False) or reconstructs in "
                             f"the backbone (reconstruct=True)")
        if not isinstance(self.reconstruct, bool):
            raise ValueError(f"reconstruct must be True or False, got {self.reconstruct!r}")
        if not self.reconstruct and self.reconstruct_after is not None:
            raise ValueError("reconstruct_after is set but reconstruct=False (cluster only); "
                             "set reconstruct=True to restore full resolution")
        if self.layerwise_reducer is not None:
            if self.cluster_after is not None:
                raise ValueError("layerwise_reducer and cluster_after are both set; a "
                                 "layerwise reducer replaces clustering: set one of them")
            if self.reducer is not None or self.reconstructor is not None:
                raise ValueError("layerwise_reducer replaces the reducer/reconstructor pair; "
                                 "leave reducer and reconstructor unset")

    def span(self, depth: int, what: str) -> Tuple[Optional[int], Optional[int]]:
        """As :meth:`ExpediteArgs.span`; ``reconstruct_after`` is ``None`` when clustering
        only."""
        cluster_after, reconstruct_after = super().span(depth, what)
        return cluster_after, reconstruct_after if self.reconstruct else None

    def build_layerwise(self, depth: int):
        """The layerwise reducer module for ``depth`` layers, or ``None``."""
        return build_layerwise_reducer(self.layerwise_reducer, depth)


@dataclass(frozen=True)
class WindowViTExpediteArgs(WindowExpediteArgs):
    """The expedite arguments of a plain ViT that attends within windows (SAM's image
    encoder, ``ExpeditedViTSAM``).

    Those of :class:`WindowExpediteArgs` without ``stage`` (one stack of layers) and
    ``attention_mask_shift`` (the windows are not shifted): every ``K x K`` attention
    window becomes ``k x k`` centres (``clustered_window_size``, default
    ``round(0.7 * K)``: 14 -> 10), and ``cluster_after`` / ``reconstruct_after`` count
    layers, 1-based as for :class:`ExpediteArgs` (Expedit-SAM's clustering location 6 is
    ``cluster_after=6``; reconstruction defaults to after the last layer, before the neck).
    """

    _other_family: ClassVar[Dict[str, str]] = {
        **WindowExpediteArgs._other_family,
        "stage": "this ViT has no stages; cluster_after counts layers",
        "attention_mask_shift": "this ViT's attention windows are not shifted",
    }

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(name for name in super().names()
                     if name not in ("stage", "attention_mask_shift"))


class ExpediteMixin:
    """Takes the expedite arguments out of ``__init__``'s keywords and builds the operators.

    ``expedite_args_class`` names the argument family. After the stock ``__init__`` the
    subclass calls :meth:`_setup_expedite` with its depth and cluster budget. Attributes:
    ``expedite_args`` (validated), ``cluster_after`` / ``reconstruct_after`` (``None``
    when disabled; ``reconstruct_after`` also with ``reconstruct_placement='logits'``),
    ``clustering`` / ``reconstruction`` (the operator pair, ``None`` when disabled),
    ``reducer_type`` / ``reconstructor_type``.
    """

    expedite_args_class: ClassVar[type] = ExpediteArgs
    clustering: Optional[nn.Module]
    reconstruction: Optional[nn.Module]
    reducer_type: Optional[str] = None
    reconstructor_type: Optional[str] = None

    def __init__(self, *args, **kwargs) -> None:
        expedite_args = self.expedite_args_class.pop_from(kwargs)
        super().__init__(*args, **kwargs)
        self.expedite_args = expedite_args
        self._fallback_warned = False

    def _setup_expedite(self, depth: int, grid: GridSpec, what: str = "layers",
                        allowed_reducers: Sequence[str] = tuple(REDUCERS)) -> None:
        args = self.expedite_args
        self.cluster_after, self.reconstruct_after = args.span(depth, what)
        # Built even when disabled, so that bad reducer options fail now; parameter-free.
        operators = args.build_operators(grid, allowed_reducers)
        if self.cluster_after is None:
            self.clustering = self.reconstruction = None
            return
        (self.reducer_type, self.clustering, self.reconstructor_type,
         self.reconstruction) = operators

    @property
    def expedited(self) -> bool:
        return self.clustering is not None

    def _warn_fallback(self, hw: Tuple[int, int], clustered: str) -> None:
        if not self._fallback_warned:
            self._fallback_warned = True
            warnings.warn(f"{type(self).__name__}: clustering the token grid {tuple(hw)} would "
                          f"give {clustered}, not fewer tokens; running the stock "
                          f"(unexpedited) forward for such inputs", RuntimeWarning, stacklevel=4)

    def _can_expedite(self, hw: Tuple[int, int]) -> bool:
        """True if clustering ``hw`` tokens gives fewer tokens; otherwise warns (once)."""
        if can_cluster(self.clustering.grid, hw):
            return True
        h, w = resolve_grid(self.clustering.grid, hw)
        self._warn_fallback(hw, f"{h}x{w} centres")
        return False


__all__ = ["ExpediteArgs", "WindowExpediteArgs", "ClassificationExpediteArgs",
           "WindowViTExpediteArgs", "ExpediteMixin", "DEFAULT_GRID",
           "DEFAULT_CLASSIFICATION_TEMPERATURE", "PLACEMENTS"]
