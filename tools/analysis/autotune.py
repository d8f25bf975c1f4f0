"""Pick the expedite setting for a compute budget, without labels.

    python tools/analysis/autotune.py CONFIG CHECKPOINT
        (--budget-gflops RATIO | --budget-latency-ms MS) [--budget-on whole|backbone]
        [--images DIR | --val N] [--families clustering,avgpool,evit,tome]
        [--work-dir DIR] [--shape H W] [--alphas 4 8 ...] [--grid-ratios 0.5 0.7 ...]
        [--first-images 3] [--eta 3] [--all-feasible] [--repeat 5] [--device cpu|cuda]
        [--trust-checkpoint] [--allow-partial-load] [--cfg-options k=v ...]
        [--validate [--validate-budgets 0.6 0.7 0.8]]

CONFIG is your config: a stock one (mmseg ``VisionTransformer``, mmseg/mmdet
``SwinTransformer``, mmpretrain ``SwinTransformerV2`` / ``ViTSAM`` / ``VisionTransformer``,
``HybridViT``: its backbone becomes our expedited type, every key kept) or an already
expedited one. CHECKPOINT is its weights (path or URL, loaded safely; see checkpoints.md).

The budget. ``--budget-gflops R``: the fvcore GFLOPs of the whole model (``--budget-on
backbone``: of the backbone), expedited / stock, at the config's test input size (or
``--shape``), at most R. ``--budget-latency-ms MS``: the median latency of
``model.predict`` on one input of that size, measured on this machine (``--device``),
interleaved with the stock model, at most MS.

What it does.
1. The search space (docs/autotune.md): the cluster location alpha over the depth (every
   layer, or every ``round(depth / 12)``-th of deep models), the cluster grid as ratios
   of the token grid (windowed backbones: the clustered window size k), for every family
   asked for (``clustering``: the method; ``avgpool``: pooled centres + the method's
   reconstruction; ``evit`` / ``tome``: the baselines at the same token budget, or their
   keep rate / r in a classification ViT), and both placements of the reconstruction
   where the config's head allows the logits one.
2. FLOPs first, each counted once (cached): per chain (family, placement, size; alpha
   free) one fvcore count, of the clustered layers only for plain ViTs (the layers before
   alpha replaced by stubs), at the smallest and largest alpha for windowed backbones;
   every alpha then follows from the per-layer counts (the layers before alpha are the
   stock ones). Settings over the budget are dropped, and so is every setting that a
   feasible one dominates (the same setting with a later alpha or a larger grid also
   fits), unless ``--all-feasible``.
3. Agreement, no labels: the stock model runs once per image (cached); each candidate's
   prediction is scored against it (mIoU of the argmax for segmentation, PQ for panoptic,
   mask PQ for instances, 1-AbsRel for depth, top-1 agreement for classification, cosine
   for SAM embeddings; ``expedite_mm.utils.agreement``). Successive halving: every
   candidate on the first ``--first-images`` images, the best 1/eta on eta times as many,
   ..., the finalists on all images. Plain ViTs start from the stock model's recorded
   output of layer alpha (``--no-stock-reuse``: run every candidate in full).
4. The choice: the best agreement on all images within the budget, verified by a real
   fvcore count of the written config (latency: measured).

Output in ``--work-dir``: ``autotune.csv`` (every candidate: setting, GFLOPs and ratios,
latency if asked, agreement and on how many images, what became of it), ``autotune.png``
(cost vs agreement, Pareto front marked), ``autotune_config.py`` (``_base_`` = CONFIG plus
the chosen backbone keys), ``autotune.json``; a table on stdout. ``cache.sqlite`` keeps
every measurement, keyed by hashes of the config, checkpoint, image and setting:
interrupt and rerun and nothing finished is measured again. Errors (empty image folder,
unreadable image, a budget nothing meets, a backbone we cannot expedite, ...) are one line
on stderr, exit code 2 (3: no setting meets the budget), and nothing is written.

``--validate`` (with ``--val N``, the config's labelled test set): every feasible setting
up to the largest of ``--validate-budgets`` is run on all images and also scored by the
config's evaluator (true mIoU etc.); reports Spearman's rho between agreement and the true
metric, and per budget the true metric of the tuner's pick against the best setting of the
exhaustive labelled search (``validation.csv``, ``validation.json``, ``validation.png``).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import os.path as osp
import socket
import sqlite3
import sys
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from expedite_mm.utils.config import CfgOptionsAction

FAMILIES = {"clustering": "Cluster", "avgpool": "AvgPool", "evit": "EViT", "tome": "ToMe"}
KIND_OF_TYPE = {"ExpeditedViT": "vit", "ExpeditedHybridViT": "vit", "ExpeditedBEiT": "vit",
                "ExpeditedMAE": "vit", "ExpeditedSwin": "window",
                "ExpeditedSwinV2": "window", "ExpeditedViTSAM": "sam",
                "ExpeditedVisionTransformer": "classification"}
# clustered layers run from their submodules by the backbone (BEiT's bias on the centres):
# part of their cost is counted in the backbone, outside the layer's module
COST_OUTSIDE_LAYER = ("ExpeditedBEiT", "ExpeditedMAE")
KIND_FAMILIES = {"vit": ("clustering", "avgpool", "evit", "tome"),
                 "window": ("clustering", "avgpool"), "sam": ("clustering", "avgpool"),
                 "classification": ("clustering", "evit", "tome")}
DEFAULT_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_KEEP_RATES = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_TOME_R = (4, 8, 12, 16, 20, 24, 32, 40)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EXIT_INPUT, EXIT_BUDGET = 2, 3
COLUMNS = ["family", "placement", "alpha", "grid", "grid_hw", "window", "keep_rate", "r",
           "gflops", "gflops_ratio", "backbone_gflops", "backbone_ratio", "flops",
           "latency_ms", "latency_ratio", "agreement", "agreement_measure", "images",
           "status", "pareto", "chosen"]
TRUE_COLUMNS = ["true_metric", "true_metric_name"]


class AutotuneError(Exception):
    """A problem with the user's input: reported as one line, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- arguments
def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="autotune.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="your config (stock or expedited backbone)")
    parser.add_argument("checkpoint", help="its weights: a path or URL")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-gflops", type=_ratio, metavar="RATIO",
                        help="GFLOPs of the expedited model / the stock model, in (0, 1)")
    budget.add_argument("--budget-latency-ms", type=float, metavar="MS",
                        help="median latency of one input on this machine, in ms")
    parser.add_argument("--budget-on", choices=("whole", "backbone"), default="whole",
                        help="what --budget-gflops counts (default: the whole model)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="a folder of your images (searched "
                        "recursively for .jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp)")
    source.add_argument("--val", type=int, metavar="N",
                        help="the first N images of the config's test set (default 20 "
                             "without --images)")
    parser.add_argument("--families", default="clustering",
                        help="comma-separated: clustering (the method), avgpool, evit, tome "
                             "(default: clustering)")
    parser.add_argument("--work-dir", default="work_dirs/autotune")
    parser.add_argument("--shape", type=int, nargs="+", metavar="N",
                        help="input H W for the budget (default: the config's test size)")
    parser.add_argument("--alphas", type=int, nargs="+",
                        help="cluster_after values (default: every round(depth/12)-th layer)")
    parser.add_argument("--grid-ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS),
                        help="cluster grid sides as ratios of the token grid (windowed "
                             "backbones: of the window); default 0.2 ... 0.9")
    parser.add_argument("--keep-rates", type=float, nargs="+", default=list(DEFAULT_KEEP_RATES),
                        help="classification EViT keep rates")
    parser.add_argument("--tome-r", type=int, nargs="+", default=list(DEFAULT_TOME_R),
                        help="classification ToMe r values")
    parser.add_argument("--first-images", type=int, default=3,
                        help="successive halving: images of the first round (default 3)")
    parser.add_argument("--eta", type=int, default=3,
                        help="successive halving: keep 1/eta of the candidates, eta times "
                             "the images, per round (default 3)")
    parser.add_argument("--all-feasible", action="store_true",
                        help="measure every setting within the budget, not only those no "
                             "feasible setting dominates")
    parser.add_argument("--repeat", type=int, default=5,
                        help="latency: timed calls per model (interleaved; default 5)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint holding arbitrary objects (unsafe unpickling)")
    parser.add_argument("--allow-partial-load", action="store_true",
                        help="accept a checkpoint whose weights do not all fit the model")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    parser.add_argument("--validate", action="store_true",
                        help="with --val: also the config's evaluator on every feasible "
                             "setting; Spearman rho and the picks against the labelled oracle")
    parser.add_argument("--validate-budgets", type=_ratio, nargs="+", default=[0.6, 0.7, 0.8],
                        help="GFLOPs budgets of --validate (default 0.6 0.7 0.8)")
    parser.add_argument("--no-stock-reuse", action="store_true",
                        help="run every candidate in full (plain ViTs otherwise start from "
                             "the stock model's output of layer alpha, which is the same)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    problems = [
        (args.shape is not None and len(args.shape) not in (1, 2), "--shape takes H W or one size"),
        (args.budget_latency_ms is not None and not args.budget_latency_ms > 0,
         "--budget-latency-ms must be > 0"),
        (args.first_images < 1 or args.repeat < 1, "--first-images and --repeat must be >= 1"),
        (args.eta < 2, "--eta must be >= 2"),
        (args.val is not None and args.val < 1, "--val must be >= 1"),
        (any(not 0 < r < 1 for r in args.grid_ratios + args.keep_rates),
         "--grid-ratios and --keep-rates take values in (0, 1)"),
        (any(r < 1 for r in args.tome_r) or any(a < 0 for a in args.alphas or []),
         "--tome-r must be >= 1 and --alphas >= 0")]
    for bad, message in problems:
        if bad:
            parser.error(message)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown or not args.families:
        parser.error(f"--families takes a comma-separated list of {', '.join(FAMILIES)}; "
                     f"got {args.families or 'nothing'}")
    if args.validate:
        if args.images or args.budget_latency_ms is not None:
            parser.error("--validate needs the config's labelled test set (--val N) and a "
                         "GFLOPs budget")
        if args.budget_gflops is None:      # the written config's budget: the largest
            args.budget_gflops = max(args.validate_budgets)
    elif args.budget_gflops is None and args.budget_latency_ms is None:
        parser.error("give a budget: --budget-gflops RATIO or --budget-latency-ms MS")
    if args.images is None and args.val is None:
        args.val = 20
    args.work_dir = osp.abspath(args.work_dir)
    return args


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One point of the search space (``None``: not used by this setting)."""

    family: str
    placement: str = ""           # ViT: 'backbone' / 'logits'
    alpha: Optional[int] = None   # cluster_after
    grid: Optional[float] = None  # ViT: cluster grid side / token grid side
    window: Optional[int] = None  # windowed: clustered_window_size k
    keep_rate: Optional[float] = None   # classification EViT
    r: Optional[int] = None             # classification ToMe

    @property
    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def chain(self) -> "Setting":
        """The setting with alpha left open: what one FLOP count covers."""
        return dataclasses.replace(self, alpha=None)

    def label(self) -> str:
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


STOCK = Setting("stock")


def _hash(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]


# --------------------------------------------------------------------------- cache
class Cache:
    """Every measurement, keyed by a hash: in memory until :meth:`open` names the file
    (so that a run stopped by bad input writes nothing), then also in SQLite, one
    committed row per measurement (an interrupted run loses nothing it finished)."""

    def __init__(self) -> None:
        self._memory: Dict[str, Any] = {}
        self._db: Optional[sqlite3.Connection] = None
        self._writable = False
        self._pending: List[str] = []
        self.hits = 0
        self.stored = 0

    def read(self, path: str) -> None:
        """Read (only) an existing cache file: what an earlier run measured."""
        if osp.isfile(path):
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self._writable = False

    def open(self, path: str) -> None:
        """Keep every measurement (those so far, and from now on) in ``path``."""
        self.close()
        os.makedirs(osp.dirname(path), exist_ok=True)
        self._db = sqlite3.connect(path)
        self._writable = True
        self._db.execute("CREATE TABLE IF NOT EXISTS measurements "
                         "(key TEXT PRIMARY KEY, kind TEXT, value BLOB)")
        for key in self._pending:
            self._write(key, self._memory[key])
        self._pending.clear()
        self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._writable = False

    @staticmethod
    def _encode(value: Any) -> Tuple[str, bytes]:
        if isinstance(value, dict) and value and all(
                type(v).__module__ == "numpy" for v in value.values()):
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **value)
            return "arrays", buffer.getvalue()
        return "json", json.dumps(value).encode()

    def _write(self, key: str, value: Any) -> None:
        kind, blob = self._encode(value)
        self._db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?)",
                         (key, kind, blob))

    def get(self, key: str) -> Any:
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if self._db is None:
            return None
        row = self._db.execute("SELECT kind, value FROM measurements WHERE key = ?",
                               (key,)).fetchone()
        if row is None:
            return None
        kind, blob = row
        if kind == "arrays":
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                value = {name: data[name] for name in data.files}
        else:
            value = json.loads(blob)
        self._memory[key] = value
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        self._memory[key] = value
        self.stored += 1
        if self._writable:
            self._write(key, value)
            self._db.commit()
        else:
            self._pending.append(key)


# --------------------------------------------------------------------------- inputs
def list_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursive, sorted); every one must be readable."""
    import cv2
    if not osp.isdir(folder):
        raise AutotuneError(f"--images {folder}: no such folder")
    files = sorted(osp.join(root, name) for root, _, names in os.walk(folder)
                   for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise AutotuneError(f"--images {folder}: no images in it "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
    bad = [path for path in files if cv2.imread(path, cv2.IMREAD_UNCHANGED) is None]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise AutotuneError(f"--images: cannot read {bad[0]}{more}: not a valid image file")
    return files


def _test_pipeline_without_annotations(cfg) -> List[dict]:
    from expedite_mm.utils.config import inference_pipeline
    return [step for step in inference_pipeline(cfg)
            if "Annotation" not in str(step.get("type", ""))]


@dataclass
class Image:
    """One input: its identity (for the cache) and how to get the model's data batch."""

    name: str
    key: str
    load: Callable[[], dict]


def folder_images(cfg, files: Sequence[str]) -> List[Image]:
    from mmengine.dataset import Compose
    pipeline = Compose(_test_pipeline_without_annotations(cfg))

    def loader(index: int, path: str):
        return lambda: pipeline(dict(img_path=path, img_id=index, seg_fields=[],
                                     reduce_zero_label=False))
    return [Image(osp.basename(path), _file_hash(path), loader(i, path))
            for i, path in enumerate(files)]


def dataset_images(cfg, count: int) -> Tuple[List[Image], Any]:
    """The first ``count`` samples of the config's test set (with their labels)."""
    from mmengine.registry import DATASETS
    try:
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        size = len(dataset)
    except Exception as error:  # noqa: BLE001 - any failure to find the data
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AutotuneError(f"cannot load the config's test set ({first}); give --images DIR "
                            f"with your images") from None
    if size == 0:
        raise AutotuneError("the config's test set is empty; give --images DIR")
    images = []
    for index in range(min(count, size)):
        info = dataset.get_data_info(index)
        files = [info[k] for k in ("img_path", "seg_map_path") if isinstance(info.get(k), str)]
        key = _hash([_file_hash(f) if osp.exists(f) else f for f in files])
        images.append(Image(osp.basename(info.get("img_path", str(index))), key,
                            lambda i=index: dataset[i]))
    return images, dataset


# --------------------------------------------------------------------------- the tuner
@dataclass
class Structure:
    """What the search space needs to know of the backbone."""

    kind: str
    depth: int
    layer_names: List[str]
    window_size: Optional[int] = None        # windowed: K
    token_grid: Optional[Tuple[int, int]] = None
    logits_ok: bool = False
    # whether a clustered layer's whole cost is counted in the layer's module (then one
    # layer's count stands for every layer's and a chain is counted once, with stubs)
    layer_holds_cost: bool = False


def probe_structure(cfg, model, shape) -> Structure:
    backbone_cfg = cfg.model.backbone
    kind = KIND_OF_TYPE[str(backbone_cfg.type).rpartition(".")[2]]
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
                     layer_holds_cost=type(backbone).__name__ not in COST_OUTSIDE_LAYER)


def search_space(args, cfg, structure: Structure) -> List[Setting]:
    """Every setting to consider (over the budget or not)."""
    from expedite_mm.ops.cluster import resolve_grid
    kind, depth = structure.kind, structure.depth
    if args.alphas:
        alphas = sorted({a for a in args.alphas if a < depth})
        if not alphas:
            raise AutotuneError(f"--alphas: the backbone has {depth} layers; cluster_after "
                                f"must be < {depth}")
    else:
        stride = max(1, round(depth / 12))
        alphas = set(range(stride, depth, stride))
        own = cfg.model.backbone.get("cluster_after")
        if isinstance(own, int) and 0 < own < depth:
            alphas.add(own)
        alphas = sorted(alphas)
    settings: List[Setting] = []
    if kind in ("vit", "classification"):
        grids, seen = [], set()
        for ratio in sorted(args.grid_ratios):
            hw = resolve_grid(ratio, structure.token_grid)
            if hw[0] * hw[1] < structure.token_grid[0] * structure.token_grid[1] and hw not in seen:
                seen.add(hw)
                grids.append(ratio)
        placements = ["logits", "backbone"] if structure.logits_ok else ["backbone"]
        for family in args.families:
            if kind == "classification" and family == "evit":
                settings += [Setting(family, keep_rate=k) for k in sorted(args.keep_rates)]
                continue
            if kind == "classification" and family == "tome":
                settings += [Setting(family, r=r) for r in sorted(args.tome_r)]
                continue
            for placement in placements if family in ("clustering", "avgpool") else ["backbone"]:
                settings += [Setting(family, placement if kind == "vit" else "", a, g)
                             for g in grids for a in alphas]
    else:
        K = structure.window_size
        sizes = sorted({max(1, round(r * K)) for r in args.grid_ratios} - {K})
        sizes = [k for k in sizes if k < K]
        for family in args.families:
            settings += [Setting(family, alpha=a, window=k) for k in sizes for a in alphas]
    return settings


def apply_setting(cfg, setting: Setting):
    """A copy of the (expedited-type) config running ``setting``."""
    import copy

    from expedite_mm.utils.config import disable_expedite
    from expedite_mm.utils.settings import set_reducer
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
    set_reducer(backbone, FAMILIES[setting.family])
    if setting.window is not None:
        backbone["clustered_window_size"] = setting.window
    if setting.grid is not None:
        backbone["cluster_grid"] = setting.grid
    if setting.placement:
        backbone["reconstruct_placement"] = setting.placement
        if setting.placement == "logits":
            cfg.model["type"] = "ExpeditedEncoderDecoder"
    return cfg


class Tuner:
    """Holds the stock model, the measurements and the search."""

    def __init__(self, args, cfg, stock_model, images: List[Image], dataset=None) -> None:
        from expedite_mm.utils.config import default_input_shape
        self.args, self.cfg, self.stock_model = args, cfg, stock_model
        self.images, self.dataset = images, dataset
        self.shape = (tuple((args.shape * 2)[:2]) if args.shape
                      else tuple(default_input_shape(cfg)))
        self.structure = probe_structure(cfg, stock_model, self.shape)
        self.cache = Cache()
        self.forwards = 0
        self.flop_counts = 0
        self.exact_flops = False
        model_text = json.dumps(cfg.model.to_dict(), sort_keys=True, default=str)
        self.config_id = _hash(model_text, _test_pipeline_without_annotations(cfg),
                               cfg.get("custom_imports"))
        self.checkpoint_id = _checkpoint_id(args.checkpoint)
        self.agreement = None
        self._evaluator = None
        backbone = stock_model.backbone
        self.replay = self.structure.kind == "vit" and not args.no_stock_reuse
        self.replay_checked = False
        self.replay_limit = (min(backbone.out_indices) + 1
                             if self.replay and not getattr(backbone, "out_origin", False) else 0)

    # ------------------------------------------------------------------ models
    def build(self, setting: Setting):
        """The model of ``setting``, sharing the stock model's weights."""
        from expedite_mm.utils.config import build_model_sharing
        if setting == STOCK:
            return self.stock_model
        return build_model_sharing(apply_setting(self.cfg, setting), self.stock_model)

    # ------------------------------------------------------------------ FLOPs
    def _count(self, setting: Setting) -> Dict[str, Any]:
        """A real fvcore count of ``setting`` (cached): whole, backbone, per layer."""
        key = _hash("flops", self.config_id, self.shape, setting.key)
        found = self.cache.get(key)
        if found is not None:
            return found
        try:
            model = self.build(setting)
        except (ValueError, TypeError) as error:
            record = {"invalid": _first_line(error)}
        else:
            record = self._flop_record(model)
            del model
        self.cache.put(key, record)
        return record

    def _flop_record(self, model) -> Dict[str, Any]:
        from expedite_mm.utils.flops import model_flops
        counted = model_flops(model, self.shape, backbone_only=self.args.budget_on == "backbone")
        self.flop_counts += 1
        return {"whole": counted.whole, "backbone": counted.backbone, "note": counted.note,
                "layers": [counted.by_module.get(n, 0) for n in self.structure.layer_names]}

    def _chain(self, chain: Setting) -> Dict[str, Any]:
        """What counting a chain (a setting with alpha left open) tells of its settings:
        the cost of each layer as the first clustered one and as a later one, and of
        everything else, which may change by a fixed step per clustered layer (windowed
        backbones derive every clustered block's attention bias in the stage) (cached).
        The first clustered layer can cost more (EViT/ToMe score the tokens with its norm
        and projections).

        Plain ViTs whose layers hold their whole cost: one count, of the model at the chain's largest alpha (at most depth
        - 2) with its first alpha layers replaced by stubs passing their input on (a
        layer's output has its input's shape, and the count depends on shapes only), so
        only the embedding, the clustered layers, the head and the operators are traced;
        the layers are alike, so one layer's costs are every layer's. Other backbones:
        counts at the smallest and the largest alpha (each layer from the smallest on)."""
        alphas = self.chain_alphas[chain]
        depth = self.structure.depth
        stubbed = (self.structure.layer_holds_cost and not self.args.no_stock_reuse
                   and depth >= 2 and min(alphas[-1], depth - 2) <= self.replay_limit)
        at = [min(alphas[-1], depth - 2)] if stubbed else sorted({alphas[0], alphas[-1]})
        key = _hash("chain", self.config_id, self.shape, chain.key, at, stubbed)
        found = self.cache.get(key)
        if found is not None:
            return found
        stock = self.stock_flops()
        counts = []
        for alpha in at:
            try:
                model = self.build(dataclasses.replace(chain, alpha=alpha))
            except (ValueError, TypeError) as error:
                self.cache.put(key, {"invalid": _first_line(error)})
                return self.cache.get(key)
            if stubbed:
                for i in range(alpha):
                    model.backbone.layers[i] = _Skip()
            counts.append(self._flop_record(model))
            del model
        alpha, layers = at[0], counts[0]["layers"]
        if stubbed:
            first, clustered = [layers[alpha]] * depth, [layers[alpha + 1]] * depth
        else:
            first = [None] * alpha + layers[alpha:]
            clustered = [None] * (alpha + 1) + layers[alpha + 1:]
        record = {"alpha": alpha, "first": first, "clustered": clustered}
        for what in ("whole", "backbone"):
            rests = []
            for a, counted in zip(at, counts):
                if counted[what] is None:
                    break
                before = 0 if stubbed else sum(stock["layers"][:a])
                rests.append(counted[what] - before - sum(counted["layers"][a:]))
            record[f"{what}_rest"] = rests[0] if rests else None
            record[f"{what}_step"] = ((rests[1] - rests[0]) / (at[1] - at[0])
                                      if len(rests) == 2 else 0)
        self.cache.put(key, record)
        return record

    def stock_flops(self) -> Dict[str, Any]:
        record = self._count(STOCK)
        if record.get("whole") is None and self.args.budget_on == "whole":
            raise AutotuneError(f"the whole model cannot be counted ({record.get('note')}); "
                                f"use --budget-on backbone")
        return record

    def _derived(self, setting: Setting) -> Dict[str, Any]:
        """Whole and backbone flops of ``setting`` from its chain's count: the stock
        layers before alpha, the chain's first and later clustered layers after it."""
        chain = self._chain(setting.chain)
        if "invalid" in chain:
            return chain
        stock, alpha = self.stock_flops(), setting.alpha
        layers = (sum(stock["layers"][:alpha]) + chain["first"][alpha]
                  + sum(chain["clustered"][alpha + 1:]))
        steps = alpha - chain["alpha"]
        return {what: (None if chain[f"{what}_rest"] is None else
                       round(chain[f"{what}_rest"] + steps * chain[f"{what}_step"]) + layers)
                for what in ("whole", "backbone")}

    def flops(self, setting: Setting) -> Dict[str, Any]:
        """GFLOPs of ``setting`` and its ratios to the stock model; ``'flops'`` says
        whether they were counted for this setting or derived from its chain's count."""
        stock = self.stock_flops()
        counted = self.cache.get(_hash("flops", self.config_id, self.shape, setting.key))
        if setting == STOCK or counted is not None or setting.alpha is None or self.exact_flops:
            record, source = counted or self._count(setting), "counted"
        else:
            record, source = self._derived(setting), "derived"
        if "invalid" in record:
            return {"invalid": record["invalid"]}
        out = {"gflops": None if record["whole"] is None else record["whole"] / 1e9,
               "backbone_gflops": record["backbone"] / 1e9,
               "backbone_ratio": record["backbone"] / stock["backbone"], "flops": source}
        out["gflops_ratio"] = (record["whole"] / stock["whole"]
                               if record["whole"] is not None and stock["whole"] else None)
        out["cost"] = out["gflops_ratio" if self.args.budget_on == "whole" else "backbone_ratio"]
        return out

    def check_flop_model(self) -> None:
        """Count one derived setting for real and compare; if they differ, count every
        setting instead. The setting: the first chain's smallest alpha that its chain
        count did not count (stubbed chains: the smallest; others: the second)."""
        for chain, alphas in sorted(self.chain_alphas.items(), key=lambda item: item[0].key):
            stubbed = self._chain(chain).get("first", [None])[0] is not None
            candidates = alphas if stubbed else alphas[1:-1]
            if not candidates or "invalid" in self._chain(chain):
                continue
            setting = dataclasses.replace(chain, alpha=candidates[0])
            derived, counted = self._derived(setting), self._count(setting)
            if "invalid" in counted:
                continue
            what = "whole" if self.args.budget_on == "whole" else "backbone"
            if abs(counted[what] - derived[what]) > 1e-6 * max(1.0, abs(counted[what])):
                print(f"note: the FLOPs derived for {setting.label()} "
                      f"({derived[what] / 1e9:.6f}) are not its count "
                      f"({counted[what] / 1e9:.6f} GFLOPs); counting every setting",
                      file=sys.stderr)
                self.exact_flops = True
            return

    def prepare_chains(self, settings: Sequence[Setting]) -> None:
        self.chain_alphas: Dict[Setting, List[int]] = {}
        for s in settings:
            if s.alpha is not None:
                self.chain_alphas.setdefault(s.chain, []).append(s.alpha)
        for alphas in self.chain_alphas.values():
            alphas.sort()

    # ------------------------------------------------------------------ latency
    def _latency_key(self, setting: Setting) -> str:
        return _hash("latency", self.config_id, self.shape, setting.key, self.args.device,
                     socket.gethostname(), self.args.repeat)

    def measured_latency(self, setting: Setting) -> Optional[Dict[str, float]]:
        """The latency of ``setting`` if it was measured (never measures)."""
        return self.cache.get(self._latency_key(setting))

    def latency(self, setting: Setting) -> Dict[str, float]:
        """Median latency (ms) of ``model.predict`` on one synthetic input, interleaved with
        the stock model (cached per machine and device)."""
        key = self._latency_key(setting)
        found = self.cache.get(key)
        if found is None:
            found = self._measure_latency(setting)
            self.cache.put(key, found)
        return found

    def _measure_latency(self, setting: Setting) -> Dict[str, float]:
        from expedite_mm.utils.benchmark import benchmark
        from expedite_mm.utils.config import synthetic_batch
        model = self.build(setting)
        calls = {}
        for name, m in (("stock", self.stock_model), ("candidate", model)):
            inputs, samples = synthetic_batch(m, self.shape, 1, self.args.device)
            calls[name] = (lambda m=m, x=inputs, s=samples: m.predict(x, s))
        with torch.no_grad():
            timings = benchmark(calls, torch.device(self.args.device), repeat=self.args.repeat,
                                warmup=1, progress=False, measure_memory=False)
        record = {"latency_ms": timings["candidate"].median * 1e3,
                  "stock_ms": timings["stock"].median * 1e3}
        record["latency_ratio"] = record["latency_ms"] / record["stock_ms"]
        return record

    # ------------------------------------------------------------------ predictions
    def _run(self, model, image: Image):
        from mmengine.dataset import pseudo_collate
        data = pseudo_collate([image.load()])
        with torch.no_grad():
            outputs = model.test_step(data)
        self.forwards += 1
        return outputs[0], data

    def reference(self, image: Image, record: Sequence[int] = ()
                  ) -> Tuple[Dict[str, Any], Optional[Dict[int, List[Any]]]]:
        """The stock prediction on ``image`` (compact arrays; run once, cached), and with
        ``record`` the outputs of those layers (1-based alphas) in every call of the
        backbone (one per slide crop), for replaying (the stock model then runs again if
        its prediction was cached)."""
        key = _hash("stock", self.config_id, self.checkpoint_id, image.key)
        ref = self.cache.get(key)
        missing_truth = self.args.validate and self._truth(STOCK, image) is None
        if ref is not None and not record and not missing_truth:
            self._set_measure(None)
            return ref, None
        recorded: Dict[int, List[Any]] = {a: [] for a in record}
        layers = self.stock_model.backbone.layers if record else []
        handles = [layers[a - 1].register_forward_hook(
            lambda module, inputs, output, a=a: recorded[a].append(output)) for a in record]
        try:
            sample, data = self._run(self.stock_model, image)
        finally:
            for handle in handles:
                handle.remove()
        self._set_measure(sample)
        if ref is None:
            ref = self.agreement.extract(sample)
            self.cache.put(key, ref)
        if missing_truth:
            self._store_truth(STOCK, image, sample, data)
        return ref, (recorded if record else None)

    def _set_measure(self, sample) -> None:
        """The agreement measure, from the first stock prediction (its name is cached)."""
        from expedite_mm.utils.agreement import agreement_for
        if self.agreement is not None:
            return
        key = _hash("measure", self.config_id, self.checkpoint_id)
        name = self.cache.get(key)
        if name is not None:
            self.agreement = agreement_for(_Fields(name), self.stock_model)
            return
        self.agreement = agreement_for(sample, self.stock_model)
        self.cache.put(key, self.agreement.name)

    def _stats_key(self, setting: Setting, image: Image) -> str:
        return _hash("agreement", self.config_id, self.checkpoint_id, image.key, setting.key)

    def _done(self, setting: Setting, image: Image) -> bool:
        return (self.cache.get(self._stats_key(setting, image)) is not None
                and (not self.args.validate or self._truth(setting, image) is not None))

    def replayable(self, setting: Setting) -> bool:
        """Whether ``setting`` can start from the stock model's output of its layer alpha
        (plain ViTs whose outputs all come from layer alpha or later)."""
        return (self.replay and setting.alpha is not None
                and 1 <= setting.alpha <= self.replay_limit)

    def measure_image(self, image: Image, settings: Sequence[Setting],
                      models: "CandidateModels", bar=None) -> None:
        """Agreement statistics (cached) of every setting on one image; the stock model
        runs at most once for them."""
        todo = [s for s in settings if not self._done(s, image)]
        if bar is not None:
            bar.update(len(settings) - len(todo))
        if not todo:
            return
        replay = [s for s in todo if self.replayable(s)]
        ref, recorded = self.reference(image, sorted({s.alpha for s in replay}))
        for s in todo:
            if s in replay and self.replay:
                model, layer = models.replay_model(s)
                layer.start(recorded[s.alpha])
                sample, data = self._run(model, image)
                if not self.replay_checked:
                    sample = self._check_replay(s, image, sample, models)
            else:
                sample, data = self._run(models.model(s), image)
            self.cache.put(self._stats_key(s, image),
                           self.agreement.compare(self.agreement.extract(sample), ref))
            if self.args.validate:
                self._store_truth(s, image, sample, data)
            if bar is not None:
                bar.update(1)

    def _check_replay(self, setting: Setting, image: Image, sample, models):
        """The first replayed prediction against the full model's (must be identical)."""
        full, _ = self._run(models.model(setting), image)
        self.replay_checked = True
        a, b = self.agreement.extract(sample), self.agreement.extract(full)
        if not all(np.array_equal(a[k], b[k]) for k in b):
            print(f"note: replaying the stock model's first layers changed the prediction of "
                  f"{setting.label()}; running every candidate in full", file=sys.stderr)
            self.replay = False
            return full
        return sample

    def score(self, setting: Setting, images: Sequence[Image]) -> float:
        """Agreement (percent) of ``setting`` on ``images`` (all must be measured)."""
        self._set_measure(None)
        return self.agreement.aggregate([
            self.cache.get(_hash("agreement", self.config_id, self.checkpoint_id, im.key,
                                 setting.key)) for im in images])

    # ------------------------------------------------------------------ true metric (validate)
    def evaluator(self):
        if self._evaluator is None:
            from mmengine.evaluator import Evaluator
            evaluator = Evaluator(self.cfg.test_evaluator)
            evaluator.dataset_meta = getattr(self.dataset, "metainfo", None)
            self._evaluator = evaluator
        return self._evaluator

    def _truth_key(self, setting: Setting, image: Image) -> str:
        return _hash("truth", self.config_id, self.checkpoint_id, image.key, setting.key,
                     json.dumps(self.cfg.test_evaluator, default=str))

    def _truth(self, setting: Setting, image: Image):
        return self.cache.get(self._truth_key(setting, image))

    def _store_truth(self, setting: Setting, image: Image, sample, data) -> None:
        evaluator = self.evaluator()
        for metric in evaluator.metrics:
            metric.results.clear()
        evaluator.process(data_samples=[sample], data_batch=data)
        results = [_encode_results(metric.results) for metric in evaluator.metrics]
        for metric in evaluator.metrics:
            metric.results.clear()
        self.cache.put(self._truth_key(setting, image), results)

    def true_metric(self, setting: Setting, images: Sequence[Image]) -> Tuple[str, float]:
        """The config's evaluator on ``setting``'s predictions of ``images``: (name, value)."""
        import logging

        from mmengine.logging import MMLogger
        evaluator = self.evaluator()
        per_image = [self._truth(setting, im) for im in images]
        metrics: Dict[str, Any] = {}
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)       # IoUMetric prints a per-class table
        try:
            for i, metric in enumerate(evaluator.metrics):
                results = [r for entry in per_image for r in _decode_results(entry[i])]
                metrics.update(metric.compute_metrics(results))
        finally:
            logger.setLevel(level)
        name = "mIoU" if "mIoU" in metrics else next(
            k for k, v in metrics.items() if isinstance(v, (int, float)))
        return name, float(metrics[name])


class _Fields:
    """Stands in for a data sample when only the kind of prediction is known (cached)."""

    FIELD = {"mIoU": "pred_sem_seg", "PQ": "pred_panoptic_seg", "mask PQ": "pred_instances",
             "1-AbsRel": "pred_depth_map", "top-1": "pred_label", "cosine": "image_embedding"}

    def __init__(self, measure: str) -> None:
        self._fields = [self.FIELD[measure]]

    def keys(self):
        return self._fields


def _checkpoint_id(checkpoint: str) -> str:
    if osp.exists(checkpoint):
        info = os.stat(checkpoint)
        return _hash(osp.abspath(checkpoint), info.st_size, info.st_mtime_ns)
    return _hash(checkpoint)


def _encode_results(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.tolist(), "dtype": str(value.dtype).split(".")[-1]}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_results(v) for v in value]}
    if isinstance(value, list):
        return [_encode_results(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_results(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise AutotuneError(f"--validate: cannot keep an evaluator result of type "
                        f"{type(value).__name__}")


def _decode_results(value: Any) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_decode_results(v) for v in value["__tuple__"])
        return {k: _decode_results(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_results(v) for v in value]
    return value


# --------------------------------------------------------------------------- the search
def tight(settings: Sequence[Setting], feasible: Callable[[Setting], bool],
          sizes: Dict[Setting, List[Any]]) -> List[Setting]:
    """The feasible settings that no feasible neighbour dominates: the same setting with
    the next alpha of its chain, or with the next larger size at the same alpha."""
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
        for field, values in (("grid", sizes.get("grid")), ("window", sizes.get("window")),
                              ("keep_rate", sizes.get("keep_rate")), ("r", sizes.get("r"))):
            value = getattr(s, field)
            if value is None or not values:
                continue
            # more tokens: a larger grid / window / keep rate, a smaller ToMe r
            more = ([v for v in values if v < value][-1:] if field == "r"
                    else [v for v in values if v > value][:1])
            if more:
                upgrades.append(dataclasses.replace(s, **{field: more[0]}))
        if not any(u in by_key and feasible(u) for u in upgrades):
            out.append(s)
    return out


def successive_halving(tuner: Tuner, candidates: List[Setting], images: List[Image],
                       first: int, eta: int, cost: Callable[[Setting], float],
                       progress: bool) -> Dict[Setting, Dict[str, Any]]:
    """Measure ``candidates`` round by round: all on the first ``first`` images, then the
    best ``ceil(n / eta)`` (at least 2) on ``eta`` times as many, until the last round
    measures the survivors on every image. Returns per candidate its agreement on the
    images it was measured on, how many, and the round it stopped at."""
    from tqdm import tqdm
    results: Dict[Setting, Dict[str, Any]] = {}
    alive = list(candidates)
    count = min(first, len(images))
    round_index = 0
    models = CandidateModels(tuner)
    while alive:
        subset = images[:count]
        bar = tqdm(total=count * len(alive), disable=not progress, unit="run",
                   desc=f"round {round_index}: {len(alive)} settings x {count} images")
        for im in subset:
            tuner.measure_image(im, alive, models, bar)
        bar.close()
        for s in alive:
            results[s] = {"agreement": tuner.score(s, subset), "images": count,
                          "round": round_index}
        if count >= len(images):
            break
        alive.sort(key=lambda s: (-results[s]["agreement"], cost(s), s.key))
        alive = alive[:max(2, math.ceil(len(alive) / eta))]
        models.keep(alive)
        count = min(len(images), count * eta)
        round_index += 1
    return results


class _Skip(nn.Module):
    """Stands in for a stock layer whose output is known (replayed, or counted apart):
    passes its input on."""

    def forward(self, x):
        return x


class _Replay(nn.Module):
    """Stands in for layer ``alpha`` (1-based) of a candidate: returns, call by call (one
    per slide crop), what the stock model's layer computed on the same input."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: List[Any] = []
        self.calls = 0

    def start(self, outputs: List[Any]) -> None:
        self.outputs, self.calls = outputs, 0

    def forward(self, x):
        out = self.outputs[self.calls]
        self.calls += 1
        return out


class CandidateModels:
    """The candidates' models of one search (built once, sharing the stock weights): the
    full model, and for plain ViTs a replaying one whose first alpha layers return the
    stock model's recorded outputs (those layers are the stock ones, so the result is the
    same; checked on the first use, and not used again if it ever differed)."""

    def __init__(self, tuner: "Tuner") -> None:
        self.tuner = tuner
        self.full: Dict[Setting, Any] = {}
        self.replaying: Dict[Setting, Any] = {}

    def keep(self, settings: Iterable[Setting]) -> None:
        keep = set(settings)
        for table in (self.full, self.replaying):
            for s in [s for s in table if s not in keep]:
                del table[s]

    def model(self, setting: Setting):
        if setting not in self.full:
            self.full[setting] = self.tuner.build(setting)
        return self.full[setting]

    def replay_model(self, setting: Setting):
        """The replaying model of ``setting`` and its replay layer."""
        if setting not in self.replaying:
            model = self.tuner.build(setting)
            layers = model.backbone.layers
            for i in range(setting.alpha - 1):
                layers[i] = _Skip()
            layers[setting.alpha - 1] = _Replay()
            self.replaying[setting] = model
        model = self.replaying[setting]
        return model, model.backbone.layers[setting.alpha - 1]


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points no other point dominates (lower or equal cost and higher or
    equal agreement, one of them strictly)."""
    front = []
    for i, (cost, agree) in enumerate(points):
        if not any((c <= cost and a >= agree and (c < cost or a > agree))
                   for j, (c, a) in enumerate(points) if j != i):
            front.append(i)
    return front


def choose(measured: Dict[Setting, Dict[str, Any]], n_images: int, cost: Callable,
           budget: float) -> Optional[Setting]:
    """The best agreement on all images within the budget (ties: the cheaper)."""
    final = [s for s, m in measured.items() if m["images"] == n_images and cost(s) <= budget]
    if not final:
        return None
    return min(final, key=lambda s: (-measured[s]["agreement"], cost(s), s.key))


def select(tuner: Tuner, settings: Sequence[Setting], budget: float,
           cost: Callable[[Setting], Optional[float]], progress: bool):
    """The tuner's whole decision at one budget: candidates, halving, choice."""
    feasible = lambda s: cost(s) is not None and cost(s) <= budget  # noqa: E731
    sizes = {field: sorted({getattr(s, field) for s in settings
                            if getattr(s, field) is not None})
             for field in ("grid", "window", "keep_rate", "r")}
    candidates = ([s for s in settings if feasible(s)] if tuner.args.all_feasible
                  else tight(settings, feasible, sizes))
    candidates.sort(key=lambda s: (-cost(s), s.key))
    measured = successive_halving(tuner, candidates, tuner.images, tuner.args.first_images,
                                  tuner.args.eta, cost, progress)
    return candidates, measured, choose(measured, len(tuner.images), cost, budget)


# --------------------------------------------------------------------------- outputs
def render_config(user_config: str, chosen_cfg, header: Sequence[str]) -> str:
    """``_base_`` = the user's config file + only what differs in the chosen model
    (the backbone keys of the setting, ``--cfg-options`` on the model)."""
    from mmengine.config import Config
    base = Config.fromfile(user_config)
    lines = [f"# {line}" for line in header]
    lines.append(f"_base_ = {osp.abspath(user_config)!r}")
    imports = dict(chosen_cfg.get("custom_imports") or {})
    if imports != dict(base.get("custom_imports") or {}):
        lines.append(f"custom_imports = dict(imports={list(imports.get('imports', []))!r}, "
                     f"allow_failed_imports={imports.get('allow_failed_imports', False)!r})")
    changed = _diff(base.model.to_dict(), chosen_cfg.model.to_dict())
    lines.append(f"model = {_py(changed)}")
    return "\n".join(lines) + "\n"


def _diff(base: dict, new: dict) -> dict:
    """What to write over ``base`` so that mmengine's merge gives ``new`` (dicts merge key
    by key; a key ``new`` lacks is set to None)."""
    out = {}
    for key in list(new) + [k for k in base if k not in new]:
        old, value = base.get(key, _MISSING), new.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            inner = _diff(old, value)
            if inner:
                out[key] = inner
        elif old is _MISSING or old != value:
            out[key] = value
    return out


_MISSING = object()


def _py(value: Any) -> str:
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_py(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then rename onto ``path`` (readers never see half a file). ``write``
    creates the file, so it gets the usual permissions (the umask's), not a temporary
    file's private ones."""
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex}{osp.splitext(path)[1]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_csv(path: str, rows: Sequence[Dict[str, Any]], columns: Sequence[str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({c: _fmt(row.get(c)) for c in columns})
    write_atomic(path, write)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot(rows: Sequence[Dict[str, Any]], path: str, x: str, xlabel: str, measure: str,
         budget: float, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = [r for r in rows if r.get("agreement") is not None and r.get(x) is not None
             and r["status"] != "stock"]
    partial = [r for r in shown if not r.get("all_images")]
    full = [r for r in shown if r.get("all_images")]
    if partial:
        ax.scatter([r[x] for r in partial], [r["agreement"] for r in partial], s=14,
                   facecolors="none", edgecolors="gray", label="stopped early (fewer images)")
    families = sorted({r["family"] for r in full})
    for family in families:
        pts = [r for r in full if r["family"] == family]
        ax.scatter([r[x] for r in pts], [r["agreement"] for r in pts], s=22, label=family)
    front = sorted((r for r in rows if r.get("pareto") and r.get(x) is not None),
                   key=lambda r: r[x])
    if front:
        ax.step([r[x] for r in front], [r["agreement"] for r in front], where="post",
                color="black", linewidth=1, label="Pareto front")
    stock = [r for r in rows if r["status"] == "stock" and r.get(x) is not None]
    if stock:
        ax.scatter([stock[0][x]], [stock[0]["agreement"]], marker="x", color="black",
                   label="stock")
    chosen = [r for r in rows if r.get("chosen")]
    if chosen:
        ax.scatter([chosen[0][x]], [chosen[0]["agreement"]], marker="*", s=180, color="red",
                   zorder=5, label="chosen")
    ax.axvline(budget, color="red", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"agreement with the stock model ({measure}, %)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def plot_validation(validation: Dict[str, Any], path: str, measure: str, xlabel: str,
                    title: str) -> None:
    """Left: agreement against the true metric of every validated setting (Spearman's rho
    in the title). Right: cost against the true metric, per budget the tuner's pick (star)
    and the labelled oracle (ring)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, metric = validation["rows"], validation["metric"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.scatter([r["agreement"] for r in rows], [r["true_metric"] for r in rows], s=14)
    left.set_xlabel(f"agreement with the stock model ({measure}, %)")
    left.set_ylabel(f"true {metric}")
    left.set_title(f"{validation['settings']} settings: Spearman rho "
                   f"{validation['spearman_rho']:.3f}", fontsize=9)
    right.scatter([r["cost"] for r in rows], [r["true_metric"] for r in rows], s=14,
                  color="gray", label="validated settings")
    right.axhline(validation["stock_true_metric"], color="black", linewidth=1,
                  label=f"stock ({validation['stock_true_metric']:.2f})")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, b in zip(colours, validation["budgets"]):
        right.axvline(b["budget"], color=colour, linestyle="--", linewidth=1)
        if b["pick"] is not None:
            right.scatter([b["pick_cost"]], [b["pick_true_metric"]], marker="*", s=160,
                          color=colour, zorder=5, label=f"{b['budget']:g}: pick")
        if b["oracle"] is not None:
            right.scatter([b["oracle_cost"]], [b["oracle_true_metric"]], s=90,
                          facecolors="none", edgecolors=colour, linewidths=1.5, zorder=5,
                          label=f"{b['budget']:g}: oracle")
    right.set_xlabel(xlabel)
    right.set_ylabel(f"true {metric}")
    right.set_title("the tuner's picks against the labelled oracle", fontsize=9)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def print_table(rows: Sequence[Dict[str, Any]], title: str, latency: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    columns = ["setting", "grid_hw", "gflops", "gflops_ratio", "backbone_ratio"]
    columns += ["latency_ms"] if latency else []
    columns += ["agreement", "images", "status"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("setting", "status") else "right")
    for r in rows:
        style = "bold red" if r.get("chosen") else ("bold" if r.get("pareto") else None)
        table.add_row(*[_cell(r, c) for c in columns], style=style)
    Console(width=160).print(table)


def _cell(row: Dict[str, Any], column: str) -> str:
    if column == "setting":
        return row["label"] + (" *" if row.get("pareto") else "")
    value = row.get(column)
    if isinstance(value, float):
        return f"{value:.4g}" if column != "agreement" else f"{value:.2f}"
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- validation
def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else float("nan")


def validate(tuner: Tuner, settings: Sequence[Setting], cost: Callable) -> Dict[str, Any]:
    """Every feasible setting (at the largest budget) on all images, with the true metric;
    then the tuner's pick per budget against the labelled oracle at that budget."""
    args = tuner.args
    top = max(args.validate_budgets)
    everything = [s for s in settings if cost(s) is not None and cost(s) <= top]
    saved = args.all_feasible, args.first_images
    args.all_feasible, args.first_images = True, len(tuner.images)
    try:
        _, measured, _ = select(tuner, everything, top, cost, not args.quiet)
    finally:
        args.all_feasible, args.first_images = saved
    rows = []
    for s in everything:
        name, value = tuner.true_metric(s, tuner.images)
        rows.append({"setting": s, "label": s.label(), "cost": cost(s),
                     "agreement": measured[s]["agreement"], "true_metric": value,
                     "true_metric_name": name})
    stock_name, stock_value = tuner.true_metric(STOCK, tuner.images)
    rho = spearman([r["agreement"] for r in rows], [r["true_metric"] for r in rows]) \
        if len(rows) >= 2 else float("nan")
    truth = {r["setting"]: r["true_metric"] for r in rows}
    budgets = []
    for budget in sorted(args.validate_budgets):
        _, _, pick = select(tuner, settings, budget, cost, False)   # all cached now
        within = [r for r in rows if r["cost"] <= budget]
        oracle = max(within, key=lambda r: (r["true_metric"], -r["cost"])) if within else None
        budgets.append({
            "budget": budget,
            "pick": pick.label() if pick else None,
            "pick_true_metric": truth.get(pick) if pick else None,
            "pick_cost": cost(pick) if pick else None,
            "oracle": oracle["label"] if oracle else None,
            "oracle_true_metric": oracle["true_metric"] if oracle else None,
            "oracle_cost": oracle["cost"] if oracle else None,
            "gap": (oracle["true_metric"] - truth[pick]) if pick and oracle else None})
    return {"metric": stock_name, "stock_true_metric": stock_value, "settings": len(rows),
            "spearman_rho": rho, "budgets": budgets, "rows": rows}


# --------------------------------------------------------------------------- main
def load_inputs(args):
    """Everything that can be wrong with the input, checked before anything is written."""
    from mmengine.registry import init_default_scope

    import expedite_mm.models  # noqa: F401  (registers the backbones)
    from expedite_mm.utils.checkpoint import CheckpointError
    from expedite_mm.utils.config import (as_expedited, build_model, disable_expedite,
                                          import_custom_modules, load_config)
    if not osp.isfile(args.config):
        raise AutotuneError(f"config {args.config}: no such file")
    try:
        user_cfg = load_config(args.config, args.cfg_options)
    except Exception as error:  # noqa: BLE001 - mmengine raises many kinds
        raise AutotuneError(f"cannot read config {args.config}: {_first_line(error)}") from None
    try:
        cfg, _ = as_expedited(user_cfg)
    except ValueError as error:
        raise AutotuneError(str(error)) from None
    kind = KIND_OF_TYPE[str(cfg.model.backbone.type).rpartition(".")[2]]
    unsupported = [f for f in args.families if f not in KIND_FAMILIES[kind]]
    if unsupported:
        raise AutotuneError(f"--families {','.join(unsupported)}: not available for "
                            f"{cfg.model.backbone.type} (it takes "
                            f"{', '.join(KIND_FAMILIES[kind])})")
    import_custom_modules(cfg)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    dataset = None
    if args.images:
        images = folder_images(cfg, list_images(args.images))
    else:
        images, dataset = dataset_images(cfg, args.val)
        if args.validate and "test_evaluator" not in cfg:
            raise AutotuneError("--validate: the config has no test_evaluator")
    if not (osp.exists(args.checkpoint) or "://" in args.checkpoint):
        raise AutotuneError(f"checkpoint {args.checkpoint}: no such file")
    try:
        stock = build_model(disable_expedite(cfg), args.checkpoint, args.device,
                            args.trust_checkpoint, args.allow_partial_load)
    except CheckpointError as error:
        raise AutotuneError(_first_line(error)) from None
    except (ValueError, TypeError, KeyError) as error:
        raise AutotuneError(f"cannot build the model of {args.config}: "
                            f"{_first_line(error)}") from None
    return user_cfg, cfg, stock, images, dataset


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run(args) -> int:
    user_cfg, cfg, stock, images, dataset = load_inputs(args)
    tuner = Tuner(args, cfg, stock, images, dataset)
    cache_path = osp.join(args.work_dir, "cache.sqlite")
    tuner.cache.read(cache_path)
    settings = search_space(args, cfg, tuner.structure)
    tuner.prepare_chains(settings)
    latency_mode = args.budget_latency_ms is not None
    quiet = args.quiet
    from tqdm import tqdm

    # 1. FLOPs: the stock model and the cheapest setting of every chain group first (in
    # memory), so a budget nothing meets stops before anything is written
    tuner.stock_flops()
    groups: Dict[Tuple[str, str], List[Setting]] = {}
    for s in settings:
        groups.setdefault((s.family, s.placement), []).append(s)
    cheapest_each = []
    for members in groups.values():
        smallest = min(members, key=lambda s: (s.grid or 0, s.window or 0, s.keep_rate or 0,
                                               -(s.r or 0), s.alpha or 0))
        cheapest_each.append(smallest)
    costs_known = {s: tuner.flops(s) for s in cheapest_each}
    valid = {s: c for s, c in costs_known.items() if "invalid" not in c}
    known = bool(valid)     # (else the other settings are counted below)
    if not known:
        valid = {STOCK: {"cost": -math.inf}}
    cheapest = min(valid, key=lambda s: valid[s]["cost"])
    if not latency_mode and valid[cheapest]["cost"] > args.budget_gflops:
        raise AutotuneError(
            f"no setting meets --budget-gflops {args.budget_gflops:g}: the cheapest, "
            f"{cheapest.label()}, has a {args.budget_on} GFLOPs ratio of "
            f"{valid[cheapest]['cost']:.3f}", EXIT_BUDGET)
    stock_latency = None
    if latency_mode:
        measured = tuner.latency(cheapest)
        stock_latency = measured["stock_ms"]
        if stock_latency <= args.budget_latency_ms:
            print(f"the stock model already runs in {stock_latency:.1f} ms <= "
                  f"{args.budget_latency_ms:g} ms: nothing to expedite", file=sys.stderr)
            return 0
        if known and measured["latency_ms"] > args.budget_latency_ms:
            raise AutotuneError(
                f"no setting meets --budget-latency-ms {args.budget_latency_ms:g}: the "
                f"cheapest by FLOPs, {cheapest.label()}, takes {measured['latency_ms']:.1f} ms "
                f"(stock {stock_latency:.1f} ms)", EXIT_BUDGET)

    # from here on measurements are kept in the work dir
    tuner.cache.open(cache_path)
    try:
        return _search(args, tuner, user_cfg, settings, latency_mode, stock_latency, quiet, tqdm)
    finally:
        tuner.cache.close()


def _search(args, tuner: Tuner, user_cfg, settings, latency_mode, stock_latency, quiet, tqdm):
    # 2. FLOPs of every setting: one count per chain, the rest follows
    chains = sorted({s.chain if s.alpha is not None else s for s in settings}, key=lambda s: s.key)
    for chain in tqdm(chains, desc="FLOPs (one count per chain)", disable=quiet, unit="count"):
        tuner.flops(dataclasses.replace(chain, alpha=tuner.chain_alphas[chain][0])
                    if chain in tuner.chain_alphas else chain)
    tuner.check_flop_model()
    flops = {s: tuner.flops(s) for s in settings}
    valid_settings = [s for s in settings if "invalid" not in flops[s]]
    if not valid_settings:
        raise AutotuneError("no setting of the search space builds: " + "; ".join(
            sorted({flops[s]["invalid"] for s in settings})))

    # 3. the cost of the budget: the FLOP ratio, or the measured latency
    if latency_mode:
        cost, budget = _latency_costs(tuner, valid_settings, flops, stock_latency, quiet, tqdm)
    else:
        cost = lambda s: flops[s]["cost"] if "invalid" not in flops[s] else None  # noqa: E731
        budget = args.budget_gflops

    # 4. agreement: successive halving over the candidates
    candidates, measured, chosen = select(tuner, valid_settings, budget, cost, not quiet)
    validation = validate(tuner, valid_settings, cost) if args.validate else None

    if chosen is None:
        raise AutotuneError(f"no setting meets the budget ({budget:g}"
                            f"{' ms, measured' if latency_mode else ''})", EXIT_BUDGET)
    # 5. the config, verified by a real count (or the measured latency)
    user_config = args.config
    chosen_cfg = _written_setting(tuner, chosen)
    verified = _verify(tuner, chosen, chosen_cfg)
    if not latency_mode and verified["cost"] > budget + 1e-12:
        raise AutotuneError(f"the chosen setting counts {verified['cost']:.4f} > budget "
                            f"{budget:g} (the FLOP model was off); rerun with the same work "
                            f"dir", EXIT_BUDGET)
    if latency_mode and verified["latency_ms"] > budget:
        raise AutotuneError(f"the chosen setting, {chosen.label()}, measured "
                            f"{verified['latency_ms']:.1f} ms > {budget:g} ms", EXIT_BUDGET)
    rows = _rows(tuner, settings, flops, candidates, measured, chosen, cost, budget, latency_mode,
                 stock_latency)
    measure = tuner.agreement.name
    header = _header(args, tuner, chosen, flops[chosen], measured[chosen], verified, measure,
                     latency_mode)
    text = render_config(user_config, chosen_cfg, header)
    _check_rendered(text, chosen_cfg, args.work_dir)
    x = "latency_ms" if latency_mode else ("gflops_ratio" if args.budget_on == "whole"
                                           else "backbone_ratio")
    xlabel = ("latency (ms, this machine)" if latency_mode else
              f"{args.budget_on} GFLOPs / stock (fvcore, {tuner.shape[0]}x{tuner.shape[1]})")
    title = f"{osp.basename(args.config)}: {len(tuner.images)} images"
    write_csv(osp.join(args.work_dir, "autotune.csv"), rows, COLUMNS)
    plot(rows, osp.join(args.work_dir, "autotune.png"), x, xlabel, measure, budget, title)
    summary = {"config": osp.abspath(args.config), "checkpoint": args.checkpoint,
               "budget": budget, "budget_kind": "latency_ms" if latency_mode else
               f"{args.budget_on}_gflops_ratio", "shape": list(tuner.shape),
               "images": len(tuner.images), "agreement_measure": measure,
               "chosen": dataclasses.asdict(chosen), "chosen_label": chosen.label(),
               "agreement": measured[chosen]["agreement"], "verified": verified,
               "candidates": len(candidates), "settings": len(settings),
               "forwards": tuner.forwards, "flop_counts": tuner.flop_counts,
               "cache_hits": tuner.cache.hits}
    if validation is not None:
        summary["validation"] = {k: v for k, v in validation.items() if k != "rows"}
        vrows = [dict(r, setting=r["label"]) for r in validation["rows"]]
        write_csv(osp.join(args.work_dir, "validation.csv"), vrows,
                  ["setting", "cost", "agreement", "true_metric", "true_metric_name"])
        write_atomic(osp.join(args.work_dir, "validation.json"),
                     lambda tmp: _dump_json(tmp, summary["validation"]))
        plot_validation(validation, osp.join(args.work_dir, "validation.png"), measure,
                        f"{args.budget_on} GFLOPs / stock", title)
    write_atomic(osp.join(args.work_dir, "autotune.json"), lambda tmp: _dump_json(tmp, summary))
    config_path = osp.join(args.work_dir, "autotune_config.py")
    write_atomic(config_path, lambda tmp: _write_text(tmp, text))

    shown = sorted((r for r in rows if r.get("agreement") is not None),
                   key=lambda r: (r.get(x) is None, r.get(x) or 0))
    print_table(shown, f"{title} - {measure} agreement with the stock model "
                       f"(* Pareto front, red: chosen)", latency_mode)
    if validation is not None:
        _print_validation(validation)
    print(f"chosen: {chosen.label()}  agreement {measured[chosen]['agreement']:.2f} % "
          f"({measure}, {len(tuner.images)} images), "
          + (f"{verified['latency_ms']:.1f} ms (budget {budget:g} ms)" if latency_mode else
             f"{args.budget_on} GFLOPs ratio {verified['cost']:.4f} (budget {budget:g}, "
             f"fvcore-verified)"))
    print(f"measured {tuner.forwards} forwards and {tuner.flop_counts} FLOP counts "
          f"({tuner.cache.hits} cache hits); wrote {config_path}, autotune.csv, "
          f"autotune.png, autotune.json in {args.work_dir}")
    return 0


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _dump_json(path: str, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2, default=str)


def _latency_costs(tuner: Tuner, settings, flops, stock_latency, quiet, tqdm):
    """Latency as the cost: predicted from the FLOPs (an affine fit through the settings
    measured so far), then measured for every candidate the prediction lets through,
    until the candidates are all measured."""
    args = tuner.args
    budget = args.budget_latency_ms
    measured: Dict[Setting, float] = {}

    def fit():
        points = [(flops[s]["cost"], m) for s, m in measured.items()]
        points.append((1.0, stock_latency))
        if len(points) < 2:
            return lambda r: r * stock_latency
        xs, ys = zip(*points)
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else my / mx
        return lambda r: my + slope * (r - mx)

    sizes = {field: sorted({getattr(s, field) for s in settings if getattr(s, field) is not None})
             for field in ("grid", "window", "keep_rate", "r")}
    for _ in range(6):
        model = fit()
        cost = lambda s: measured.get(s, model(flops[s]["cost"]))  # noqa: E731
        feasible = lambda s: cost(s) <= budget  # noqa: E731
        wanted = ([s for s in settings if feasible(s)] if args.all_feasible
                  else tight(settings, feasible, sizes))
        todo = [s for s in wanted if s not in measured]
        if not todo:
            break
        for s in tqdm(todo, desc="latency", disable=quiet, unit="setting"):
            measured[s] = tuner.latency(s)["latency_ms"]
    final = fit()
    return (lambda s: measured.get(s, final(flops[s]["cost"]))), budget


def _written_setting(tuner: Tuner, chosen: Setting):
    """The chosen setting's config, with a ratio grid written as h x w where the input
    size is fixed (slide crops, a fixed preprocessor size, a classification crop)."""
    from expedite_mm.ops.cluster import resolve_grid
    cfg = apply_setting(tuner.cfg, chosen)
    if chosen.grid is not None and _fixed_input(tuner.cfg):
        cfg.model.backbone["cluster_grid"] = tuple(resolve_grid(chosen.grid,
                                                                tuner.structure.token_grid))
    return cfg


def _fixed_input(cfg) -> bool:
    test_cfg = cfg.model.get("test_cfg") or {}
    return (test_cfg.get("mode") == "slide" or bool((cfg.model.get("data_preprocessor") or {})
                                                    .get("size"))
            or cfg.get("default_scope") == "mmpretrain")


def _verify(tuner: Tuner, chosen: Setting, chosen_cfg) -> Dict[str, Any]:
    """A real fvcore count of the config that is written (and its measured latency)."""
    from expedite_mm.utils.config import build_model
    from expedite_mm.utils.flops import model_flops
    stock = tuner.stock_flops()
    model = build_model(chosen_cfg, device=tuner.args.device)
    counted = model_flops(model, tuner.shape, backbone_only=tuner.args.budget_on == "backbone")
    tuner.flop_counts += 1
    out = {"gflops": None if counted.whole is None else counted.whole / 1e9,
           "backbone_gflops": counted.backbone / 1e9,
           "gflops_ratio": (counted.whole / stock["whole"]
                            if counted.whole is not None and stock["whole"] else None),
           "backbone_ratio": counted.backbone / stock["backbone"]}
    out["cost"] = out["gflops_ratio" if tuner.args.budget_on == "whole" else "backbone_ratio"]
    if tuner.args.budget_latency_ms is not None:
        out.update(tuner.latency(chosen))
    return out


def _check_rendered(text: str, chosen_cfg, work_dir: str) -> None:
    """The written config must read back as the chosen model (else: a bug, not written)."""
    from mmengine.config import Config
    with tempfile.TemporaryDirectory() as folder:
        path = osp.join(folder, "autotune_config.py")
        with open(path, "w") as f:
            f.write(text)
        back = Config.fromfile(path)
    if back.model.to_dict() != chosen_cfg.model.to_dict():
        raise RuntimeError("the rendered config does not read back as the chosen model")


def _header(args, tuner, chosen, flops, measured, verified, measure, latency_mode) -> List[str]:
    from expedite_mm.ops.cluster import resolve_grid
    shape = f"{tuner.shape[0]}x{tuner.shape[1]}"
    what = chosen.label()
    if chosen.grid is not None:
        hw = resolve_grid(chosen.grid, tuner.structure.token_grid)
        what += (f" ({hw[0]}x{hw[1]} centres of the {tuner.structure.token_grid[0]}x"
                 f"{tuner.structure.token_grid[1]} token grid at {shape})")
    lines = [f"Chosen by tools/analysis/autotune.py: {what}."]
    if latency_mode:
        lines.append(f"Budget: {args.budget_latency_ms:g} ms on this machine "
                     f"({args.device}); measured {verified.get('latency_ms', 0):.1f} ms.")
    else:
        lines.append(f"Budget: {args.budget_on} GFLOPs <= {args.budget_gflops:g} x stock at "
                     f"{shape}; this config: {verified['cost']:.4f} (fvcore, counted).")
    lines.append(f"Agreement with the stock model on {len(tuner.images)} images: "
                 f"{measured['agreement']:.2f} % ({measure}).")
    lines.append("Only the keys the setting changes are set here; everything else is the base.")
    return lines


def _rows(tuner, settings, flops, candidates, measured, chosen, cost, budget, latency_mode,
          stock_latency):
    from expedite_mm.ops.cluster import resolve_grid
    candidate_set = set(candidates)
    n = len(tuner.images)
    rows = []
    stock = tuner.flops(STOCK)
    stock_row = {"family": "stock", "label": "stock", "gflops": stock["gflops"],
                 "gflops_ratio": 1.0 if stock["gflops"] is not None else None,
                 "backbone_gflops": stock["backbone_gflops"], "backbone_ratio": 1.0,
                 "flops": "counted", "agreement": 100.0, "images": n, "status": "stock",
                 "all_images": True}
    if latency_mode:
        stock_row["latency_ms"] = stock_latency
    rows.append(stock_row)
    for s in sorted(settings, key=lambda s: (s.family, s.placement, s.grid or 0, s.window or 0,
                                            s.keep_rate or 0, s.r or 0, s.alpha or 0)):
        row: Dict[str, Any] = dict(dataclasses.asdict(s), label=s.label())
        f = flops[s]
        if "invalid" in f:
            row["status"] = "invalid: " + f["invalid"]
            rows.append(row)
            continue
        row.update({k: f[k] for k in ("gflops", "gflops_ratio", "backbone_gflops",
                                      "backbone_ratio", "flops")})
        if s.grid is not None:
            hw = resolve_grid(s.grid, tuner.structure.token_grid)
            row["grid_hw"] = f"{hw[0]}x{hw[1]}"
        measured_ms = tuner.measured_latency(s) if latency_mode else None
        if measured_ms is not None:
            row.update(latency_ms=measured_ms["latency_ms"],
                       latency_ratio=measured_ms["latency_ratio"])
        if s in measured:
            m = measured[s]
            row.update(agreement=m["agreement"], images=m["images"],
                       agreement_measure=tuner.agreement.name, all_images=m["images"] == n)
            row["status"] = ("chosen" if s == chosen else
                             "finalist" if m["images"] == n else f"stopped after round {m['round']}")
        elif cost(s) > budget:
            row["status"] = ("over budget (predicted latency)"
                             if latency_mode and measured_ms is None else "over budget")
        elif s not in candidate_set:
            row["status"] = "dominated (a feasible setting with a later alpha or a larger grid)"
        rows.append(row)
    x = (lambda r: r["latency_ms"]) if latency_mode else (lambda r: r["gflops_ratio"]
                                                          if tuner.args.budget_on == "whole"
                                                          else r["backbone_ratio"])
    full = [r for r in rows if r.get("all_images") and r.get("agreement") is not None
            and (not latency_mode or r.get("latency_ms") is not None)]
    for i in pareto_front([(x(r), r["agreement"]) for r in full]):
        full[i]["pareto"] = True
    for r in rows:
        r.setdefault("pareto", False)
        r["chosen"] = r.get("status") == "chosen"
    return rows


def _print_validation(validation: Dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"validation: {validation['settings']} settings, Spearman rho "
                        f"(agreement vs true {validation['metric']}) = "
                        f"{validation['spearman_rho']:.3f}; stock {validation['metric']} "
                        f"{validation['stock_true_metric']:.2f}")
    for column in ("budget", "tuner's pick", "its true", "oracle", "oracle true", "gap"):
        table.add_column(column)
    for b in validation["budgets"]:
        table.add_row(f"{b['budget']:g}", str(b["pick"]), _num(b["pick_true_metric"]),
                      str(b["oracle"]), _num(b["oracle_true_metric"]), _num(b["gap"]))
    Console(width=160).print(table)


def _num(value) -> str:
    return "" if value is None else f"{value:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except AutotuneError as error:
        print(f"autotune.py: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"autotune.py: interrupted; rerun the same command to resume (finished "
              f"measurements are in {osp.join(args.work_dir, 'cache.sqlite')})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
