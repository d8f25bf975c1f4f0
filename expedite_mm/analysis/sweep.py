"""The sweep of expediting settings of one config (``tools/analysis/sweep.py``,
docs/comparisons.md, "Sweeps").

What a sweep is asked for (:class:`SweepOptions`, the command line's options), its rows
(:func:`plan`: the product of the settings' lists, the stock model first, and the
uniformly downsampled stock model; :func:`row_config`: a row as a config), the
:class:`Measurer` (fvcore GFLOPs and interleaved latency against the stock model, and the
metric of ``tools/test.py`` run on the row's config, :func:`evaluate`), the resumable CSV
(:func:`read_rows`; rows are appended as they finish) and the plot and table of the
rows (:func:`plot`, :func:`print_rows`); :func:`run` does the whole sweep.
"""
from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .latency import TimingOptions, forward_call
from .report import append_csv_row, csv_value, finish_axes, new_figure, print_table, save_figure
from .settings import grid_text, parse_grid, reducer_specs, set_reducer

SETTINGS = ["reducer", "alpha", "grid", "window", "iters", "temperature", "k", "input"]
RESULTS = ["tokens", "gflops", "backbone_gflops", "gflops_ratio", "backbone_ratio",
           "latency_ms", "latency_ratio", "metric_name", "metric"]
#: the columns of the CSV: a row's settings (its key), then its results
COLUMNS = SETTINGS + RESULTS
STOCK, DOWNSAMPLE = "stock", "Downsample"
#: which of the flat expedite parameters each reducer / reconstructor actually reads
USES = {"Cluster": ("window", "iters", "temperature"), "AvgPool": (),
        "EViT": (), "ToMe": ()}
RECON_USES = {"Cluster": ("temperature", "k"), "Bilinear": (), "Scatter": (), "Unmerge": ()}
BACKBONE_KEY = {"window": "cluster_window", "iters": "cluster_iters",
                "temperature": "temperature", "k": "reconstruct_k"}
#: the axis names of the plotted columns
AXIS_NAMES = {"tokens": "tokens kept (cluster size h*w)", "gflops": "GFLOPs (fvcore, whole)",
              "backbone_gflops": "backbone GFLOPs (fvcore)", "latency_ms": "latency (ms)",
              "gflops_ratio": "GFLOPs / stock", "latency_ratio": "latency / stock",
              "backbone_ratio": "backbone GFLOPs / stock"}

Row = Dict[str, str]


class SweepError(Exception):
    """A sweep that cannot go on (reported as the message, exit code 1)."""


@dataclass(kw_only=True)
class SweepOptions(TimingOptions):
    """What a sweep is asked for: the options of ``tools/analysis/sweep.py``, of the same
    names and meanings, already checked by its parser; how the latency is timed
    (``device``, ``fp16``, ``batch_size``, ``repeat``, ``warmup``, ``mode``) as
    :class:`~expedite_mm.analysis.latency.TimingOptions` says.

    Args:
        config: a config with an expedited backbone.
        alpha: cluster_after values, or None (the config's).
        grid: cluster grids (``(h, w)`` or a ratio), or None (the config's).
        window: cluster windows, or None (the config's).
        iters: clustering iterations, or None (the config's).
        temperature: temperatures, or None (the config's).
        k: reconstruction k values, or None (the config's).
        reducer: reducer labels (:func:`expedite_mm.analysis.settings.reducer_specs`).
        downsample: short sides of the uniformly downsampled stock rows.
        checkpoint: weights; with them every row is evaluated by ``tools/test.py``.
        trust_checkpoint: load a checkpoint holding arbitrary objects.
        allow_partial_load: accept a checkpoint whose weights do not all fit the model.
        metric: the metric recorded (None: mIoU, else the first number).
        no_benchmark: skip the latency.
        repeat: timed calls per model (default 10).
        warmup: untimed calls per model first (default 2).
        shape: input (H, W), one size, or None (the config's test size).
        cfg_options: config overrides (``--cfg-options``).
        out_dir: where row configs, metrics and test runs go (absolute).
        csv: the CSV file.
        png: the plot.
        plot_x: the plot's x column, or None (chosen from the rows).
        plot_y: the plot's y column, or None (chosen from the rows).
        reference: a CSV of published numbers drawn as dashed lines, or None.
    """

    config: str
    csv: str
    png: str
    out_dir: str = "work_dirs/sweep"
    alpha: Optional[List[int]] = None
    grid: Optional[List[Any]] = None
    window: Optional[List[int]] = None
    iters: Optional[List[int]] = None
    temperature: Optional[List[float]] = None
    k: Optional[List[int]] = None
    reducer: List[str] = field(default_factory=lambda: ["Cluster"])
    downsample: List[int] = field(default_factory=list)
    checkpoint: Optional[str] = None
    trust_checkpoint: bool = False
    allow_partial_load: bool = False
    metric: Optional[str] = None
    no_benchmark: bool = False
    repeat: int = 10
    warmup: int = 2
    shape: Optional[List[int]] = None
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    plot_x: Optional[str] = None
    plot_y: Optional[str] = None
    reference: Optional[str] = None


# --------------------------------------------------------------------------- rows
def plan(options: SweepOptions, cfg: Any, shape: Tuple[int, int]) -> List[Row]:
    """Every row's settings as strings (the CSV key), stock first.

    Args:
        options: the sweep's options (the settings' lists, the reducers, ``downsample``).
        cfg: the (expedited) config; its backbone gives the defaults.
        shape: the input (H, W).

    Raises:
        SweepError: the config has expediting disabled and no alpha is given.
    """
    from ..core.args import DEFAULT_CLASSIFICATION_TEMPERATURE
    from ..ops.cluster import DEFAULT_ITERS, DEFAULT_K, DEFAULT_TEMPERATURE, DEFAULT_WINDOW
    backbone = cfg.model.backbone
    temperature = (DEFAULT_CLASSIFICATION_TEMPERATURE
                   if backbone.get("type") == "ExpeditedVisionTransformer" else DEFAULT_TEMPERATURE)
    defaults = {"window": backbone.get("cluster_window", DEFAULT_WINDOW),
                "iters": backbone.get("cluster_iters", DEFAULT_ITERS),
                "temperature": backbone.get("temperature", temperature),
                "k": backbone.get("reconstruct_k", DEFAULT_K)}
    alphas = options.alpha or [backbone.get("cluster_after")]
    if alphas == [None]:
        raise SweepError("the config has expediting disabled: give --alpha")
    grids = options.grid or [backbone.get("cluster_grid", 0.7)]
    grids = [parse_grid(g) if isinstance(g, (str, int)) else
             (g if isinstance(g, float) else tuple(g)) for g in grids]
    values = {name: getattr(options, name) or [defaults[name]] for name in defaults}
    empty = {name: "" for name in SETTINGS}
    rows = [dict(empty, reducer=STOCK, input=f"{shape[0]}x{shape[1]}")]
    seen = set()
    for label in options.reducer:
        _, _, reducer, reconstructor = reducer_specs(label)
        used = set(USES[reducer]) | set(RECON_USES[reconstructor])
        lists = [values[name] if name in used else [None] for name in defaults]
        for alpha in alphas:
            for grid in grids:
                for combo in itertools.product(*lists):
                    row = dict(empty, reducer=label, alpha=str(alpha), grid=grid_text(grid),
                               input=f"{shape[0]}x{shape[1]}")
                    row.update({name: csv_value(v) for name, v in zip(defaults, combo)})
                    key = row_key(row)
                    if key not in seen:
                        seen.add(key)
                        rows.append(row)
    for size in options.downsample:
        rows.append(dict(empty, reducer=DOWNSAMPLE, input=str(size)))
    return rows


def row_key(row: Row) -> Tuple[str, ...]:
    """A row's settings: what identifies it in the CSV.

    Args:
        row: the row.
    """
    return tuple(str(row.get(c, "")) for c in SETTINGS)


def row_config(cfg: Any, row: Row) -> Any:
    """The config of one row (a copy).

    Args:
        cfg: the sweep's config; not changed.
        row: the row.
    """
    from ..apis.config import disable_expedite
    from .downsample import uniform_downsample
    if row["reducer"] == STOCK:
        return disable_expedite(cfg)
    if row["reducer"] == DOWNSAMPLE:
        return uniform_downsample(disable_expedite(cfg), int(row["input"]))[0]
    cfg = copy.deepcopy(cfg)
    backbone = cfg.model.backbone
    backbone["cluster_after"] = int(row["alpha"])
    backbone["cluster_grid"] = parse_grid(row["grid"])
    set_reducer(backbone, row["reducer"])
    for name, key in BACKBONE_KEY.items():
        if row[name] != "":
            backbone[key] = float(row[name]) if name == "temperature" else int(row[name])
    return cfg


def row_slug(row: Row) -> str:
    """A row as a file name (of its config and metrics).

    Args:
        row: the row.
    """
    parts = [row["reducer"]] + [f"{c[0]}{row[c]}" for c in SETTINGS[1:] if row[c] != ""]
    return re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(parts)).strip("-")


def read_rows(path: str) -> List[Row]:
    """The rows of a sweep CSV (none if it does not exist).

    Args:
        path: the CSV file.

    Raises:
        SweepError: the file has other columns than a sweep's.
    """
    if not osp.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise SweepError(f"{path} has columns {reader.fieldnames}, expected {COLUMNS}: "
                             f"use another --csv")
        return list(reader)


# --------------------------------------------------------------------------- measuring
class Measurer:
    """Builds the stock model once and measures rows against it.

    Args:
        options: the sweep's options.
        cfg: the sweep's config.
        shape: the input (H, W).
        root: the folder holding ``tools/test.py`` (a checkout, or the package's ``.mim``),
            for :func:`evaluate`.
    """

    def __init__(self, options: SweepOptions, cfg: Any, shape: Tuple[int, int],
                 root: str) -> None:
        from ..apis.config import build_model, disable_expedite
        from .flops import model_flops
        self.args, self.cfg, self.shape, self.root = options, cfg, shape, root
        self.stock = build_model(disable_expedite(cfg), options.checkpoint, options.device,
                                 options.trust_checkpoint, options.allow_partial_load)
        self.stock_flops = model_flops(self.stock, shape)
        self.stock_latency: Optional[float] = None

    def flops(self, model: Any, shape: Tuple[int, int]) -> Dict[str, Any]:
        """GFLOPs of ``model`` (whole, backbone) and their ratios to the stock model's.

        Args:
            model: the row's model.
            shape: its input (H, W).
        """
        from .flops import model_flops
        counted = model_flops(model, shape)
        stock = self.stock_flops
        whole = None if counted.whole is None else counted.whole / 1e9
        return {"gflops": whole, "backbone_gflops": counted.backbone / 1e9,
                "gflops_ratio": (counted.whole / stock.whole
                                 if counted.whole is not None and stock.whole else None),
                "backbone_ratio": counted.backbone / stock.backbone}

    def latency(self, model: Any, shape: Tuple[int, int]) -> Dict[str, Any]:
        """Median latency (ms) of ``model``, interleaved with the stock model.

        Args:
            model: the row's model (the stock model: timed alone).
            shape: its input (H, W).
        """
        import torch

        from ..apis.config import synthetic_batch
        from .latency import benchmark
        options = self.args

        def runner(m: Any, batch: Tuple[Any, Any]) -> Any:
            return forward_call(m, *batch, mode=options.mode, fp16=options.fp16)

        models = {"stock": runner(self.stock, synthetic_batch(
            self.stock, self.shape, options.batch_size, options.device))}
        if model is not self.stock:
            models["row"] = runner(model, synthetic_batch(model, shape, options.batch_size,
                                                          options.device))
        timings = benchmark(models, torch.device(options.device), repeat=options.repeat,
                            warmup=options.warmup, progress=False, measure_memory=False)
        stock = timings["stock"].median
        self.stock_latency = stock if self.stock_latency is None else self.stock_latency
        own = timings["row"].median if "row" in timings else stock
        return {"latency_ms": own * 1e3, "latency_ratio": own / stock}

    def measure(self, row: Row) -> Dict[str, Any]:
        """One row's results: tokens kept, FLOPs, latency, metric.

        Args:
            row: the row's settings.
        """
        from ..apis.checkpoint import load_state_dict_checked
        from ..apis.config import build_model, default_input_shape
        from ..ops.cluster import resolve_grid
        cfg = row_config(self.cfg, row)
        if row["reducer"] == STOCK:
            model, shape = self.stock, self.shape
        else:
            model = build_model(cfg, device=self.args.device)
            load_state_dict_checked(model, self.stock.state_dict())
            shape = tuple(default_input_shape(cfg)) if row["reducer"] == DOWNSAMPLE else self.shape
        result: Dict[str, Any] = dict(row)
        patch = token_stride(model)
        if patch:
            tokens_hw = (math.ceil(shape[0] / patch), math.ceil(shape[1] / patch))
            if row["grid"]:
                grid = resolve_grid(parse_grid(row["grid"]), tokens_hw)
                result["tokens"] = grid[0] * grid[1]
            else:
                result["tokens"] = tokens_hw[0] * tokens_hw[1]
        result.update(self.flops(model, shape))
        if not self.args.no_benchmark:
            result.update(self.latency(model, shape))
        if self.args.checkpoint:
            result.update(evaluate(self.args, cfg, row, self.root))
        del model
        return result


def token_stride(model: Any) -> Optional[int]:
    """Pixels per token of a plain (or hybrid: ResNet stride x 1x1 patches) ViT backbone
    (None for other backbones).

    Args:
        model: the model.
    """
    backbone = getattr(model, "backbone", None)
    patch = getattr(backbone, "patch_size", None)
    if not isinstance(patch, int):      # mmpretrain's ViT keeps it in its patch embedding
        stride = getattr(getattr(getattr(backbone, "patch_embed", None), "projection", None),
                         "stride", None)
        if not stride:
            return None
        patch = stride[0]
    return patch * getattr(getattr(backbone, "resnet", None), "stride", 1)


def evaluate(options: SweepOptions, cfg: Any, row: Row, root: str) -> Dict[str, Any]:
    """Run ``tools/test.py`` on the row's config (in a fresh process); the chosen metric.

    The row's config is written to ``OUT_DIR/configs/<slug>.py``, the metrics to
    ``OUT_DIR/metrics/<slug>.json``.

    Args:
        options: the sweep's options (``checkpoint``, ``out_dir``, ``metric``, ...).
        cfg: the row's config.
        row: the row.
        root: the folder holding ``tools/test.py``; it goes first on ``PYTHONPATH``.

    Returns:
        ``metric_name`` and ``metric``.

    Raises:
        RuntimeError: ``tools/test.py`` failed, or the metric is not among its results.
    """
    slug = row_slug(row)
    config_path = osp.join(options.out_dir, "configs", slug + ".py")
    metrics_path = osp.join(options.out_dir, "metrics", slug + ".json")
    os.makedirs(osp.dirname(config_path), exist_ok=True)
    os.makedirs(osp.dirname(metrics_path), exist_ok=True)
    cfg.dump(config_path)
    command = [sys.executable, osp.join(root, "tools", "test.py"), config_path,
               options.checkpoint, "--work-dir", osp.join(options.out_dir, "work_dirs", slug),
               "--metrics-json", metrics_path]
    if options.trust_checkpoint:
        command.append("--trust-checkpoint")
    if options.allow_partial_load:
        command.append("--allow-partial-load")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tools/test.py failed for {slug} (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    with open(metrics_path) as f:
        metrics = json.load(f)
    name = options.metric or ("mIoU" if "mIoU" in metrics else next(
        (k for k, v in metrics.items() if isinstance(v, (int, float))), None))
    if name not in metrics:
        raise RuntimeError(f"metric {name!r} not among {sorted(metrics)}")
    return {"metric_name": name, "metric": float(metrics[name])}


# --------------------------------------------------------------------------- plot and table
def plot(rows: Sequence[Row], path: str, x: Optional[str] = None, y: Optional[str] = None,
         title: str = "", reference: Sequence[Row] = ()) -> Tuple[str, str]:
    """Plot the rows: one line per reducer (and per other varying setting), the stock
    model as a horizontal line, plus dashed lines for the ``reference`` rows (e.g.
    published numbers: a CSV with a ``reducer`` label, ``grid`` and the plotted columns).

    Args:
        rows: the rows (as read from the CSV).
        path: the image file.
        x: the x column (None: GFLOPs against a metric, else the tokens kept).
        y: the y column (None: the metric if there is one, else GFLOPs).
        title: the plot's title.
        reference: rows drawn as dashed lines.

    Returns:
        The axes used, ``(x, y)``.
    """
    has_metric = any(r.get("metric") not in ("", None) for r in rows)
    y = y or ("metric" if has_metric else "gflops")
    x = x or ("gflops" if y == "metric" else "tokens")
    if y == "gflops" and not any(r.get("gflops") for r in rows):
        y = "backbone_gflops"
    varying = [c for c in SETTINGS[1:] if c not in ("grid", "input")
               and len({r[c] for r in rows if r[c] != ""}) > 1]
    lines: Dict[str, List[Tuple[float, float, str]]] = {}
    stock = None
    for r in rows:
        if r.get(x) in ("", None) or r.get(y) in ("", None):
            continue
        point = (float(r[x]), float(r[y]), r["grid"] or r["input"])
        if r["reducer"] == STOCK:
            stock = point
            continue
        label = r["reducer"] if r["reducer"] != DOWNSAMPLE else "uniform downsampling"
        label += "".join(f" {c}={r[c]}" for c in varying if r[c] != "")
        lines.setdefault(label, []).append(point)
    fig, ax = new_figure()
    for label, points in lines.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        if len(lines) <= 2:
            for px, py, text in points:
                ax.annotate(text, (px, py), textcoords="offset points", xytext=(4, -10),
                            fontsize=7)
    if stock is not None:
        ax.axhline(stock[1], color="gray", linestyle="--", linewidth=1,
                   label=f"stock ({stock[1]:.4g})")
    published: Dict[str, List[Tuple[float, float]]] = {}
    for r in reference:
        values = dict(r)
        if not values.get("tokens") and values.get("grid"):
            grid = parse_grid(values["grid"])
            values["tokens"] = "" if isinstance(grid, float) else str(grid[0] * grid[1])
        if values.get(x) in ("", None) or values.get(y) in ("", None) or r["reducer"] == STOCK:
            continue
        published.setdefault(r["reducer"], []).append((float(values[x]), float(values[y])))
    for label, points in published.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], linestyle="--", marker="x",
                color="black", alpha=0.7, label=label)
    names = dict(AXIS_NAMES, metric=next((r["metric_name"] for r in rows
                                          if r.get("metric_name")), "metric"))
    finish_axes(ax, names[x], names[y], title, legend_size=8)
    save_figure(fig, path)
    return x, y


def print_rows(rows: Sequence[Row], title: str) -> None:
    """Print the rows (the columns some row has a value in).

    Args:
        rows: the rows.
        title: the table's title.
    """
    shown = [c for c in COLUMNS if any(r.get(c) not in ("", None) for r in rows)]
    print_table(title, shown, [[_short(r.get(c, "")) for c in shown] for r in rows],
                right=shown, width=200)


def _short(value: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() and "." not in str(value) else f"{number:.4g}"


# --------------------------------------------------------------------------- the sweep
def run(options: SweepOptions, root: str) -> List[Row]:
    """The whole sweep: the rows not yet in the CSV measured and appended one by one, the
    table of this sweep's rows, the plot of every row of the CSV.

    Args:
        options: the sweep's options.
        root: the folder holding ``tools/test.py`` (for ``checkpoint``).

    Returns:
        This sweep's rows, as the CSV holds them.

    Raises:
        SweepError: the config has expediting disabled and no alpha is given, or the CSV
            is not a sweep's.
    """
    from tqdm import tqdm

    from ..apis.config import default_input_shape, load_config
    from ..registration import register_all_modules
    register_all_modules()  # registers the backbones
    cfg = load_config(options.config, options.cfg_options)
    shape = (tuple((options.shape * 2)[:2]) if options.shape
             else tuple(default_input_shape(cfg)))
    rows = plan(options, cfg, shape)
    done = {row_key(r) for r in read_rows(options.csv)}
    todo = [r for r in rows if row_key(r) not in done]
    print(f"sweep: {len(rows)} rows, {len(rows) - len(todo)} already in {options.csv}",
          file=sys.stderr)
    if todo:
        measurer = Measurer(options, cfg, shape, root)
        for row in tqdm(todo, desc="sweep", unit="row"):
            append_csv_row(options.csv, measurer.measure(row), COLUMNS)
    everything = read_rows(options.csv)
    wanted = {row_key(p) for p in rows}
    finished = [r for r in everything if row_key(r) in wanted]
    title = f"{osp.basename(options.config)} at {shape[0]}x{shape[1]}"
    print_rows(finished, title)
    reference: List[Row] = []
    if options.reference:
        with open(options.reference, newline="") as f:
            reference = list(csv.DictReader(line for line in f if not line.startswith("#")))
    plot(everything, options.png, options.plot_x, options.plot_y, title, reference)
    print(f"wrote {options.csv} and {options.png}", file=sys.stderr)
    return finished
