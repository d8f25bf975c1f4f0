"""The expedite arguments: one definition, composed per backbone family.

Every expedited backbone takes its stock arguments plus expedite arguments, as flat
keyword arguments (config keys). :class:`ExpediteArgs` holds the arguments every family
shares (where the layers go, the operators' settings, the reducer pair) and, composed in,
the optional parts only some families have:

============================ ================================================== ==========================
part                         config keys                                        families
============================ ================================================== ==========================
:class:`GridArgs`            ``cluster_grid``                                   plain ViTs (mmseg, mmpretrain)
:class:`PlacementArgs`       ``reconstruct_placement``                          mmseg ViTs (segmentation)
:class:`WindowArgs`          ``clustered_window_size``, ``cluster_padding``     Swin, SwinV2, SAM
:class:`StageArgs`           ``stage``, ``attention_mask_shift``                Swin, SwinV2
:class:`ClassificationArgs`  ``reconstruct``, ``layerwise_reducer``             mmpretrain classification
============================ ================================================== ==========================

An :class:`ArgsFamily` names the parts a backbone takes and its defaults for the shared
arguments (τ = 1 for classification, k = 10 for windows). Values are validated when the
backbone is built, whether or not expediting is enabled; ints may be any integral type
(e.g. numpy's). A key of a part the backbone does not take is refused with the part's own
description of where it belongs. Pure torch.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

from ..ops.cluster import (DEFAULT_ITERS, DEFAULT_K, DEFAULT_TEMPERATURE, DEFAULT_WINDOW,
                           NEIGHBOURS, NORMALIZATIONS, TIES, GridSpec, validate_choice,
                           validate_grid, validate_int, validate_temperature, validate_window)
from ..ops.layerwise import build_layerwise_reducer
from ..ops.reducers import GRID_REDUCERS, REDUCERS, build_reduction
from ..ops.window import DEFAULT_WINDOW_K, validate_clustered_window_size

DEFAULT_GRID = 0.7  # 28x28 clusters for 40x40 tokens, the paper's main setting
# Expedit-SWAG's clustering temperature for ImageNet (its factor cluster_temperture=1)
DEFAULT_CLASSIFICATION_TEMPERATURE = 1.0
PLACEMENTS = ("backbone", "logits")
MASK_SHIFTS = ("clustered", "stock")


# --------------------------------------------------------------------------- value checks
def optional_int(value: Any, name: str, minimum: int = 0) -> Optional[int]:
    """``None``, or ``value`` as an int if it is an integral number >= ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def anything(value: Any, name: str) -> Any:
    """Checked later (reducer configs: by ``build_reduction`` at build time)."""
    return value


def choice(*choices: str) -> Callable[[Any, str], str]:
    return lambda value, name: validate_choice(value, name, choices)


def checked(default: Any, check: Callable[[Any, str], Any]) -> Any:
    """A dataclass field whose value ``check(value, name)`` validates and normalises."""
    return field(default=default, metadata={"check": check})


class Part:
    """Validation shared by :class:`ExpediteArgs` and its parts: every field's ``check``
    runs on construction (a ``ValueError`` names the key), :meth:`cross_check` relates
    fields. :meth:`parse` builds from config values, normalised by the checks (e.g.
    numpy ints to ints, ``[h, w]`` to ``(h, w)``)."""

    #: where a part's keys belong, for the message when another family is given one
    belongs_to: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            if "check" in spec.metadata:
                spec.metadata["check"](getattr(self, spec.name), spec.name)
        self.cross_check()

    def cross_check(self) -> None:
        """Rules relating several fields (none by default)."""

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        """The config keys of this part (its fields that are values, not parts)."""
        return tuple(f.name for f in dataclasses.fields(cls) if "check" in f.metadata)

    @classmethod
    def parse(cls, values: Mapping[str, Any], **parts: Any):
        """``cls`` from config ``values`` (each normalised by its field's check)."""
        checks = {f.name: f.metadata["check"] for f in dataclasses.fields(cls)
                  if "check" in f.metadata}
        return cls(**{name: checks[name](value, name) for name, value in values.items()},
                   **parts)


# --------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class GridArgs(Part):
    """Plain ViTs (and MiT's expedited stage) cluster the whole token grid.

    Args:
        cluster_grid: the ``h x w`` cluster centres: an int, an ``(h, w)`` pair, or a ratio
            in (0, 1] of the token grid (default 0.7: 40x40 tokens -> 28x28 centres).
    """

    belongs_to: ClassVar[str] = ("plain ViT backbones and MiT's stages (the h x w centres "
                                 "of the whole token grid); windowed backbones cluster every "
                                 "K x K window to k x k centres: set clustered_window_size=k "
                                 "instead")
    cluster_grid: GridSpec = checked(DEFAULT_GRID, validate_grid)


@dataclass(frozen=True)
class PlacementArgs(Part):
    """Where a segmentation ViT reconstructs.

    Args:
        reconstruct_placement: ``'backbone'`` (default): inside the backbone after layer
            ``reconstruct_after``; every output is at full resolution, so any neck or head
            works. ``'logits'``: as the Expedit-Segmenter release computes: the backbone
            never reconstructs (layers ``alpha+1 .. depth`` and the final norm run on the
            centres, every output is the ``h x w`` centre map), the decode head runs on
            that map and the segmentor (``ExpeditedEncoderDecoder``) reconstructs the
            head's class logits (``docs/method.md`` §4.1). Needs a grid reducer and a head
            that reads one feature map.
    """

    belongs_to: ClassVar[str] = ("segmentation ViTs (mmseg's ExpeditedViT and its kin); "
                                 "windowed backbones reconstruct every window inside the "
                                 "stage, classification ViTs set reconstruct")
    reconstruct_placement: str = checked("backbone", choice(*PLACEMENTS))


@dataclass(frozen=True)
class WindowArgs(Part):
    """Windowed backbones cluster every attention window on its own.

    Args:
        clustered_window_size: k: every ``K x K`` window becomes ``k x k`` centres and the
            clustered layers attend within windows of k (``1 <= k <= K``; default
            ``round(0.7 * K)``: Swin 12 -> 8, SAM 14 -> 10).
        cluster_padding: ``True`` (default, as the release): the map is zero-padded to
            multiples of K and the padding is clustered like content. ``False``: only the
            content part of each window is clustered (a window with ``r x c`` content
            tokens gets ``ceil(r k / K) x ceil(c k / K)`` centres), so no centre is pure
            padding.
    """

    belongs_to: ClassVar[str] = ("windowed backbones (Swin, SwinV2, SAM's ViT), which "
                                 "cluster every K x K window to k x k centres; ViT backbones "
                                 "take cluster_grid (the h x w centres of the whole grid)")
    clustered_window_size: Optional[int] = checked(
        None, lambda value, name: optional_int(value, name, minimum=1))
    cluster_padding: bool = checked(True, boolean)

    def resolve_k(self, window_size: int) -> int:
        """k for windows of ``window_size`` (K): as given, checked against K, or by default
        the ViT default ratio per window side, ``round(0.7 K)`` (at least 1)."""
        k = self.clustered_window_size
        if k is None:
            k = max(1, round(DEFAULT_GRID * window_size))
        return validate_clustered_window_size(k, window_size)


@dataclass(frozen=True)
class StageArgs(Part):
    """Hierarchical backbones expedite one stage.

    Args:
        stage: 0-based index of the stage whose tokens are clustered (default 2, the
            third: the deepest of Swin's, MiT's, PVT's and Twins'); ``cluster_after`` / ``reconstruct_after``
            count its blocks. The paper counts alpha over all blocks: its Swin-L (depths 2,
            2, 18, 2) alpha=10 is ``stage=2, cluster_after=6``.
    """

    belongs_to: ClassVar[str] = ("hierarchical backbones (Swin, SwinV2, MiT, PVT, Twins); "
                                 "this backbone has one stack of layers")
    stage: int = checked(2, lambda value, name: _stage(value, name))

    def index_among(self, stages: int) -> int:
        """``stage``, checked against a backbone of ``stages`` stages."""
        if self.stage >= stages:
            raise ValueError(f"stage must be an int in [0, {stages - 1}] (0-based index of "
                             f"the stage to expedite), got {self.stage}")
        return self.stage


@dataclass(frozen=True)
class ShiftArgs(Part):
    """Shifted-window backbones choose the attention mask of their clustered blocks.

    Args:
        attention_mask_shift: ``'clustered'`` (default): the shifted clustered blocks roll
            by k // 2 and mask with the same shift. ``'stock'``: mask with the stage's own
            shift K // 2 while rolling by k // 2, as Expedit-Mask2Former's code does.
    """

    belongs_to: ClassVar[str] = ("hierarchical windowed backbones (Swin, SwinV2), whose "
                                 "blocks shift their windows")
    attention_mask_shift: str = checked("clustered", choice(*MASK_SHIFTS))


def _stage(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an int >= 0 (0-based index of the stage to "
                         f"expedite), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ClassificationArgs(Part):
    """Classification ViTs read the class token, as Expedit-SWAG does.

    Args:
        reconstruct: ``False`` (default, as Expedit-SWAG): cluster only -- the layers after
            ``cluster_after`` and the final norm run on the centres and the class token is
            read from them (``reconstruct_after`` must stay unset; ``out_type`` must be
            ``'cls_token'``). ``True``: restore full resolution after ``reconstruct_after``
            (default the last layer) as the dense backbones do.
        layerwise_reducer: ``dict(type='EViT', ...)`` or ``dict(type='ToMe', ...)``: EViT /
            ToMe as Expedit-SWAG ran them, reducing tokens inside several layers
            (:mod:`expedite_mm.ops.layerwise`) instead of clustering; set it without
            ``cluster_after`` and without ``reducer``.
    """

    belongs_to: ClassVar[str] = ("classification backbones (mmpretrain's "
                                 "ExpeditedVisionTransformer) only")
    reconstruct: bool = checked(False, boolean)
    layerwise_reducer: Optional[Dict[str, Any]] = checked(None, anything)


PARTS = {"grid": GridArgs, "placement": PlacementArgs, "windows": WindowArgs,
         "stages": StageArgs, "shifts": ShiftArgs, "classification": ClassificationArgs}


# --------------------------------------------------------------------------- the arguments
@dataclass(frozen=True)
class ExpediteArgs(Part):
    """The expedite arguments every backbone takes, with its family's parts composed in.

    Args:
        cluster_after: alpha, the number of layers (windowed stages: blocks of ``stage``)
            before clustering (``0 <= alpha < depth``); ``None`` (default) disables
            expediting: the backbone is the stock one, bit for bit.
        reconstruct_after: alpha + beta, the layer after which the tokens are restored to
            full resolution (``alpha < . <= depth``; default: the last layer, after the
            final norm).
        cluster_window: odd side of the ``lambda = window x window`` cells around its home
            cell that a token may join in the EM (default 5).
        cluster_iters: kappa, the EM iterations (default 5).
        temperature: tau of both layers, ``softmax(-D / tau)`` (default 50; classification
            1, Expedit-SWAG's).
        reconstruct_k: the nearest centres a reconstructed token mixes (default 20;
            windowed backbones 10, within the token's window).
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
        grid, placement, windows, stages, shifts, classification: the family's parts (``None``
            where the family has none).
    """

    cluster_after: Optional[int] = checked(None, optional_int)
    reconstruct_after: Optional[int] = checked(None, optional_int)
    cluster_window: int = checked(DEFAULT_WINDOW, validate_window)
    cluster_iters: int = checked(DEFAULT_ITERS, lambda value, name: validate_int(value, name, 1))
    temperature: float = checked(DEFAULT_TEMPERATURE, validate_temperature)
    reconstruct_k: int = checked(DEFAULT_K, lambda value, name: validate_int(value, name, 1))
    reconstruct_normalize: str = checked("sum", choice(*NORMALIZATIONS))
    reconstruct_neighbours: str = checked("global", choice(*NEIGHBOURS))
    reconstruct_ties: str = checked("exact", choice(*TIES))
    reducer: Optional[Dict[str, Any]] = checked(None, anything)
    reconstructor: Optional[Dict[str, Any]] = checked(None, anything)
    grid: Optional[GridArgs] = None
    placement: Optional[PlacementArgs] = None
    windows: Optional[WindowArgs] = None
    stages: Optional[StageArgs] = None
    shifts: Optional[ShiftArgs] = None
    classification: Optional[ClassificationArgs] = None

    def cross_check(self) -> None:
        if self.reconstruct_after is not None and self.cluster_after is None:
            raise ValueError("reconstruct_after is set but cluster_after is None; set "
                             "cluster_after to enable expediting")
        if self.on_logits:
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
        classification = self.classification
        if classification is not None:
            if not classification.reconstruct and self.reconstruct_after is not None:
                raise ValueError("reconstruct_after is set but reconstruct=False (cluster only); "
                                 "set reconstruct=True to restore full resolution")
            if classification.layerwise_reducer is not None:
                if self.cluster_after is not None:
                    raise ValueError("layerwise_reducer and cluster_after are both set; a "
                                     "layerwise reducer replaces clustering: set one of them")
                if self.reducer is not None or self.reconstructor is not None:
                    raise ValueError("layerwise_reducer replaces the reducer/reconstructor "
                                     "pair; leave reducer and reconstructor unset")

    # ---------------------------------------------------------------- derived settings
    @property
    def on_logits(self) -> bool:
        """Whether the segmentor reconstructs the head's logits (``'logits'`` placement)."""
        return self.placement is not None and self.placement.reconstruct_placement == "logits"

    @property
    def reconstructs(self) -> bool:
        """Whether the backbone itself reconstructs (not: cluster only, or logits)."""
        if self.classification is not None:
            return self.classification.reconstruct
        return not self.on_logits

    def span(self, depth: int, what: str) -> Tuple[Optional[int], Optional[int]]:
        """``(cluster_after, reconstruct_after)`` checked against ``depth`` layers/blocks:
        ``reconstruct_after`` defaults to ``depth`` and is ``None`` where the backbone does
        not reconstruct; ``(None, None)`` when disabled."""
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
        return self.cluster_after, reconstruct_after if self.reconstructs else None

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

    def build_layerwise(self, depth: int) -> Optional[nn.Module]:
        """The layerwise reducer module for ``depth`` layers, or ``None``."""
        spec = None if self.classification is None else self.classification.layerwise_reducer
        return build_layerwise_reducer(spec, depth)


# --------------------------------------------------------------------------- families
@dataclass(frozen=True)
class ArgsFamily:
    """The expedite arguments of one backbone family: the shared ones, the parts it takes
    (by their :data:`PARTS` names) and its defaults for shared arguments."""

    parts: Tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def names(self) -> Tuple[str, ...]:
        """Every config key the family takes."""
        return ExpediteArgs.keys() + tuple(key for part in self.parts
                                           for key in PARTS[part].keys())

    def parse(self, values: Mapping[str, Any]) -> ExpediteArgs:
        """:class:`ExpediteArgs` from config values (the family's defaults filled in)."""
        values = dict(values)
        for part, cls in PARTS.items():
            if part in self.parts:
                continue
            for key in cls.keys():
                if key in values:
                    raise ValueError(f"{key} is not an argument of this backbone: it is for "
                                     f"{cls.belongs_to}")
        unknown = sorted(set(values) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown expedite argument(s) {unknown}")
        parts = {part: PARTS[part].parse({key: values.pop(key) for key in PARTS[part].keys()
                                          if key in values}) for part in self.parts}
        return ExpediteArgs.parse({**self.defaults, **values}, **parts)

    def pop_from(self, kwargs: Dict[str, Any]) -> ExpediteArgs:
        """Take the family's arguments (and any other family's, to refuse them) out of a
        backbone's ``kwargs`` (in place) and parse them."""
        known = set(ExpediteArgs.keys()).union(*(cls.keys() for cls in PARTS.values()))
        return self.parse({name: kwargs.pop(name) for name in list(kwargs) if name in known})


DENSE_VIT = ArgsFamily(("grid", "placement"))
CLASSIFICATION_VIT = ArgsFamily(("grid", "classification"),
                                dict(temperature=DEFAULT_CLASSIFICATION_TEMPERATURE))
WINDOWED_STAGE = ArgsFamily(("windows", "stages", "shifts"),
                            dict(reconstruct_k=DEFAULT_WINDOW_K))
GRID_STAGE = ArgsFamily(("grid", "stages"))
WINDOWED_VIT = ArgsFamily(("windows",), dict(reconstruct_k=DEFAULT_WINDOW_K))

__all__ = ["ExpediteArgs", "GridArgs", "PlacementArgs", "WindowArgs", "StageArgs",
           "ShiftArgs", "ClassificationArgs", "ArgsFamily", "DENSE_VIT", "CLASSIFICATION_VIT",
           "WINDOWED_STAGE", "WINDOWED_VIT", "GRID_STAGE", "DEFAULT_GRID",
           "DEFAULT_CLASSIFICATION_TEMPERATURE", "PLACEMENTS", "PARTS"]
