"""The autotuner's search space (``tools/analysis/autotune.py``, docs/autotune.md).

What a run is asked for (:class:`AutotuneOptions`, the command line's options), the input
problems it reports (:class:`AutotuneError`, with the exit codes), one point of the space
(:class:`Setting`), what the space needs to know of the backbone (:class:`Structure`, read
by :func:`probe_structure` with the kind and ``cost_outside_layer`` of the backbone's row
of the family table :mod:`expedite_mm.models.families`), the space itself
(:func:`search_space`), a setting as a config (:func:`apply_setting`), and the two orders
on the space: the budget's frontier (:func:`tight`: the feasible settings that no feasible
neighbour dominates) and the Pareto front of cost against agreement
(:func:`pareto_front`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..models.families import BY_NAME

#: the families the tuner searches -> the reducer each runs (``--families``)
SEARCH_FAMILIES = {"clustering": "Cluster", "avgpool": "AvgPool", "evit": "EViT",
                   "tome": "ToMe"}
#: the families each kind of backbone (the family table's ``kind``) takes
KIND_FAMILIES = {"vit": ("clustering", "avgpool", "evit", "tome"),
                 "window": ("clustering", "avgpool"), "sam": ("clustering", "avgpool"),
                 "classification": ("clustering", "evit", "tome"),
                 "pyramid": ("clustering", "avgpool")}
DEFAULT_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_KEEP_RATES = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_TOME_R = (4, 8, 12, 16, 20, 24, 32, 40)
DEFAULT_VALIDATE_BUDGETS = (0.6, 0.7, 0.8)
#: exit codes: bad input, no setting meets the budget
EXIT_INPUT, EXIT_BUDGET = 2, 3


class AutotuneError(Exception):
    """A problem with the user's input: reported as one line, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none).

    Args:
        error: the exception.
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass
class AutotuneOptions:
    """What a tuning run is asked for: the options of ``tools/analysis/autotune.py``, of the
    same names and meanings (docs/autotune.md), already checked by its parser.

    Args:
        config: the user's config file (stock or expedited backbone).
        checkpoint: its weights (a path or URL).
        budget_gflops: the GFLOPs ratio budget in (0, 1), or None.
        budget_latency_ms: the latency budget in ms, or None (one of the two is set).
        budget_on: what the GFLOPs budget counts: ``'whole'`` or ``'backbone'``.
        images: a folder of the user's images, or None.
        val: without ``images``: the first ``val`` images of the config's test set.
        families: the families searched (:data:`SEARCH_FAMILIES`).
        work_dir: where the outputs and the cache go (absolute).
        shape: the input (H, W) of the budget, one size, or None (the config's test size).
        alphas: the cluster_after values, or None (every ``round(depth / 12)``-th layer).
        grid_ratios: cluster grid sides as ratios of the token grid (windowed: the window).
        keep_rates: classification EViT keep rates.
        tome_r: classification ToMe r values.
        first_images: successive halving: the images of the first round.
        eta: successive halving: keep 1/eta of the candidates, eta times the images.
        all_feasible: measure every feasible setting, not only the undominated ones.
        repeat: latency: timed calls per model.
        device: ``'cpu'`` or ``'cuda'``.
        trust_checkpoint: load a checkpoint holding arbitrary objects.
        allow_partial_load: accept a checkpoint whose weights do not all fit the model.
        cfg_options: config overrides (``--cfg-options``).
        validate: also score every feasible setting with the config's evaluator.
        validate_budgets: the GFLOPs budgets of the validation.
        no_stock_reuse: run every candidate in full (no replay of the stock layers).
        quiet: no progress bars.
    """

    config: str
    checkpoint: str
    budget_gflops: Optional[float] = None
    budget_latency_ms: Optional[float] = None
    budget_on: str = "whole"
    images: Optional[str] = None
    val: Optional[int] = None
    families: List[str] = field(default_factory=lambda: ["clustering"])
    work_dir: str = "work_dirs/autotune"
    shape: Optional[List[int]] = None
    alphas: Optional[List[int]] = None
    grid_ratios: List[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    keep_rates: List[float] = field(default_factory=lambda: list(DEFAULT_KEEP_RATES))
    tome_r: List[int] = field(default_factory=lambda: list(DEFAULT_TOME_R))
    first_images: int = 3
    eta: int = 3
    all_feasible: bool = False
    repeat: int = 5
    device: str = "cpu"
    trust_checkpoint: bool = False
    allow_partial_load: bool = False
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    validate: bool = False
    validate_budgets: List[float] = field(default_factory=lambda: list(DEFAULT_VALIDATE_BUDGETS))
    no_stock_reuse: bool = False
    quiet: bool = False


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One point of the search space (``None``: not used by this setting).

    Args:
        family: one of :data:`SEARCH_FAMILIES`, or ``'stock'`` (:data:`STOCK`).
        placement: ViT: where the reconstruction is, ``'backbone'`` / ``'logits'``.
        alpha: cluster_after.
        grid: ViT: the cluster grid side / the token grid side.
        window: windowed backbones: the clustered window size k.
        keep_rate: classification EViT's keep rate.
        r: classification ToMe's r.
    """

    family: str
    placement: str = ""
    alpha: Optional[int] = None
    grid: Optional[float] = None
    window: Optional[int] = None
    keep_rate: Optional[float] = None
    r: Optional[int] = None

    @property
    def key(self) -> str:
        """The setting as text, for the cache's keys and for sorting."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def chain(self) -> "Setting":
        """The setting with alpha left open: what one FLOP count covers."""
        return dataclasses.replace(self, alpha=None)

    def label(self) -> str:
        """A short name: ``clustering a6 grid0.8 logits``."""
        parts = [self.family]
        if self.alpha is not None:
            parts.append(f"a{self.alpha}")
        if self.grid is not None:
            parts.append(f"grid{self.grid:g}")
        if self.window is not None:
            parts.append(f"w{self.window}")
        if self.keep_rate is not None:
            parts.append(f"keep{self.keep_rate:g}")
        if self.r is not None:
            parts.append(f"r{self.r}")
        if self.placement:
            parts.append(self.placement)
        return " ".join(parts)


#: the stock model, as a setting
STOCK = Setting("stock")


# --------------------------------------------------------------------------- the backbone
@dataclass
class Structure:
    """What the search space needs to know of the backbone.

    Args:
        kind: the family table's kind (``vit``, ``window``, ``sam``, ``classification``,
            ``pyramid``).
        depth: the layers (hierarchical backbones: the blocks of the clustered stage).
        layer_names: their module names in the model (for the per-layer FLOP counts).
        window_size: windowed backbones and SAM: the (largest) window K.
        token_grid: plain ViTs and pyramids: the token grid (a pyramid's: of its clustered
            stage) at the budget's input size.
        logits_ok: whether the logits placement of the reconstruction is possible.
        layer_holds_cost: whether a clustered layer's whole cost is counted in the layer's
            module (then one layer's count stands for every layer's and a chain is counted
            once, with stubs).
    """

    kind: str
    depth: int
    layer_names: List[str]
    window_size: Optional[int] = None
    token_grid: Optional[Tuple[int, int]] = None
    logits_ok: bool = False
    layer_holds_cost: bool = False


def family_kind(backbone_type: str) -> str:
    """The tuner's kind of an expedited backbone type, from the family table.

    Args:
        backbone_type: the config's backbone type (a scope prefix is ignored).
    """
    return BY_NAME[str(backbone_type).rpartition(".")[2]].kind


def probe_structure(cfg: Any, model: Any, shape: Sequence[int]) -> Structure:
    """Read the backbone's structure from its built model.

    Args:
        cfg: the (expedited-type) config.
        model: the model built from it.
        shape: the budget's input (H, W).

    Raises:
        AutotuneError: a hierarchical backbone's ``stage`` outside its stages.
    """
    backbone_cfg = cfg.model.backbone
    family = BY_NAME[str(backbone_cfg.type).rpartition(".")[2]]
    kind = family.kind
    backbone = model.backbone
    if kind == "window":
        stage = backbone_cfg.get("stage", 2)
        if not 0 <= stage < len(backbone.stages):
            raise AutotuneError(f"model.backbone.stage={stage} but the backbone has "
                                f"{len(backbone.stages)} stages")
        blocks = backbone.stages[stage].blocks
        return Structure(kind, len(blocks), [f"backbone.stages.{stage}.blocks.{i}"
                                             for i in range(len(blocks))],
                         window_size=int(blocks[0].attn.window_size))
    if kind == "pyramid":               # MiT, PVT, Twins: stages of patch embedding + blocks
        stage = backbone_cfg.get("stage", 2)
        if not 0 <= stage < len(backbone.patch_embeddings()):
            raise AutotuneError(f"model.backbone.stage={stage} but the backbone has "
                                f"{len(backbone.patch_embeddings())} stages")
        h, w = shape
        for patch_embed in list(backbone.patch_embeddings())[:stage + 1]:
            # the stage's embedding: a conv, after mmcv's / mmseg's adaptive padding if any
            pad = getattr(patch_embed, "adaptive_padding", None) or \
                getattr(patch_embed, "adap_padding", None)
            if pad is not None:
                extra = pad.get_pad_shape((h, w))
                h, w = h + extra[0], w + extra[1]
            conv = patch_embed.projection
            (k, _), (s, _), (p, _) = conv.kernel_size, conv.stride, conv.padding
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        _, blocks = backbone.split_blocks(backbone.stage_steps(stage))  # (PVT: position
        names = {id(module): name for name, module in backbone.named_modules()}  # embedding)
        return Structure(kind, len(blocks), [f"backbone.{names[id(block)]}" for block in blocks],
                         token_grid=(h, w))
    depth = len(backbone.layers)
    names = [f"backbone.layers.{i}" for i in range(depth)]
    if kind == "sam":
        sizes = [getattr(layer, "window_size", 0) for layer in backbone.layers]
        return Structure(kind, depth, names, window_size=int(max(sizes)))
    # pixels per token: the patch embedding's stride (DPT's hybrid: after its ResNet's)
    stride = int(backbone.patch_embed.projection.stride[0])
    if hasattr(backbone, "resnet"):
        stride *= int(getattr(backbone.resnet, "stride", 16))
    token_grid = (math.ceil(shape[0] / stride), math.ceil(shape[1] / stride))
    # (a backbone that turns the logits placement down makes those settings invalid)
    logits_ok = (kind == "vit" and getattr(backbone, "logits_placement_supported", True)
                 and str(cfg.model.get("type")).rpartition(".")[2] in
                 ("EncoderDecoder", "ExpeditedEncoderDecoder"))
    return Structure(kind, depth, names, token_grid=token_grid, logits_ok=logits_ok,
                     layer_holds_cost=not family.cost_outside_layer)


# --------------------------------------------------------------------------- the space
def search_space(options: AutotuneOptions, cfg: Any, structure: Structure) -> List[Setting]:
    """Every setting to consider (over the budget or not).

    Args:
        options: the run's options (``families``, ``alphas``, ``grid_ratios``,
            ``keep_rates``, ``tome_r`` are read).
        cfg: the (expedited-type) config (its own ``cluster_after`` is a candidate alpha).
        structure: the backbone's structure.

    Raises:
        AutotuneError: ``alphas`` all outside the depth.
    """
    from ..ops.cluster import resolve_grid
    kind, depth = structure.kind, structure.depth
    if options.alphas:
        alphas = sorted({a for a in options.alphas if a < depth})
        if not alphas:
            raise AutotuneError(f"--alphas: the backbone has {depth} layers; cluster_after "
                                f"must be < {depth}")
    else:
        stride = max(1, round(depth / 12))
        every = set(range(stride, depth, stride))
        own = cfg.model.backbone.get("cluster_after")
        if isinstance(own, int) and 0 < own < depth:
            every.add(own)
        alphas = sorted(every)
    settings: List[Setting] = []
    if kind in ("vit", "classification", "pyramid"):
        grids, seen = [], set()
        for ratio in sorted(options.grid_ratios):
            hw = resolve_grid(ratio, structure.token_grid)
            if hw[0] * hw[1] < structure.token_grid[0] * structure.token_grid[1] and hw not in seen:
                seen.add(hw)
                grids.append(ratio)
        placements = ["logits", "backbone"] if structure.logits_ok else ["backbone"]
        for family in options.families:
            if kind == "classification" and family == "evit":
                settings += [Setting(family, keep_rate=k) for k in sorted(options.keep_rates)]
                continue
            if kind == "classification" and family == "tome":
                settings += [Setting(family, r=r) for r in sorted(options.tome_r)]
                continue
            for placement in placements if family in ("clustering", "avgpool") else ["backbone"]:
                settings += [Setting(family, placement if kind == "vit" else "", a, g)
                             for g in grids for a in alphas]
    else:
        K = structure.window_size
        sizes = sorted({max(1, round(r * K)) for r in options.grid_ratios} - {K})
        sizes = [k for k in sizes if k < K]
        for family in options.families:
            settings += [Setting(family, alpha=a, window=k) for k in sizes for a in alphas]
    return settings


def apply_setting(cfg: Any, setting: Setting) -> Any:
    """A copy of the (expedited-type) config running ``setting``.

    Args:
        cfg: the (expedited-type) config; not changed.
        setting: the setting (:data:`STOCK`: expediting disabled).
    """
    from ..apis.config import disable_expedite
    from .settings import set_reducer
    if setting == STOCK:
        return disable_expedite(cfg)
    cfg = copy.deepcopy(cfg)
    backbone = cfg.model.backbone
    if "reconstruct_after" in backbone:
        backbone["reconstruct_after"] = None        # reconstruct at the default place
    if setting.keep_rate is not None or setting.r is not None:
        if "cluster_after" in backbone:
            backbone["cluster_after"] = None
        backbone["layerwise_reducer"] = (dict(type="EViT", keep_rate=setting.keep_rate)
                                         if setting.keep_rate is not None
                                         else dict(type="ToMe", r=setting.r))
        return cfg
    if "layerwise_reducer" in backbone:
        backbone["layerwise_reducer"] = None
    backbone["cluster_after"] = setting.alpha
    set_reducer(backbone, SEARCH_FAMILIES[setting.family])
    if setting.window is not None:
        backbone["clustered_window_size"] = setting.window
    if setting.grid is not None:
        backbone["cluster_grid"] = setting.grid
    if setting.placement:
        backbone["reconstruct_placement"] = setting.placement
        if setting.placement == "logits":
            cfg.model["type"] = "ExpeditedEncoderDecoder"
    return cfg


# --------------------------------------------------------------------------- orders
def setting_sizes(settings: Sequence[Setting]) -> Dict[str, List[Any]]:
    """The values each size field (grid, window, keep_rate, r) takes in ``settings``,
    sorted: the neighbours :func:`tight` compares.

    Args:
        settings: the search space.
    """
    return {name: sorted({getattr(s, name) for s in settings if getattr(s, name) is not None})
            for name in ("grid", "window", "keep_rate", "r")}


def tight(settings: Sequence[Setting], feasible: Callable[[Setting], bool],
          sizes: Dict[str, List[Any]]) -> List[Setting]:
    """The feasible settings that no feasible neighbour dominates: the same setting with
    the next alpha of its chain, or with the next larger size at the same alpha.

    Args:
        settings: the search space.
        feasible: whether a setting is within the budget.
        sizes: per size field, its values (:func:`setting_sizes`).
    """
    by_key = set(settings)
    out = []
    for s in settings:
        if not feasible(s):
            continue
        upgrades = []
        if s.alpha is not None:
            chain = [a for a in sorted({x.alpha for x in settings if x.chain == s.chain})
                     if a > s.alpha]
            if chain:
                upgrades.append(dataclasses.replace(s, alpha=chain[0]))
        for name in ("grid", "window", "keep_rate", "r"):
            value, values = getattr(s, name), sizes.get(name)
            if value is None or not values:
                continue
            # more tokens: a larger grid / window / keep rate, a smaller ToMe r
            more = ([v for v in values if v < value][-1:] if name == "r"
                    else [v for v in values if v > value][:1])
            if more:
                upgrades.append(dataclasses.replace(s, **{name: more[0]}))
        if not any(u in by_key and feasible(u) for u in upgrades):
            out.append(s)
    return out


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points no other point dominates (lower or equal cost and higher or
    equal agreement, one of them strictly).

    Args:
        points: ``(cost, agreement)`` pairs.
    """
    front = []
    for i, (cost, agree) in enumerate(points):
        if not any((c <= cost and a >= agree and (c < cost or a > agree))
                   for j, (c, a) in enumerate(points) if j != i):
            front.append(i)
    return front
