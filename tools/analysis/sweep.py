"""Sweep expediting settings of one config: GFLOPs, latency and (optionally) the metric.

    python tools/analysis/sweep.py CONFIG [--alpha 10 ...] [--grid 8 12 16 20x28 ...]
        [--window 5 ...] [--iters 5 ...] [--temperature 50 ...] [--k 20 ...]
        [--reducer Cluster AvgPool AvgPool+Bilinear Cluster+Bilinear EViT ToMe]
        [--downsample 592 576 ...] [--checkpoint FILE [--trust-checkpoint] [--allow-partial-load]]
        [--no-benchmark] [--device cpu|cuda] [--fp16] [--repeat 10] [--warmup 2]
        [--mode predict|tensor] [--shape H W] [--metric mIoU] [--cfg-options k=v ...]
        [--out-dir DIR] [--csv FILE] [--png FILE] [--plot-x ...] [--plot-y ...]
        [--reference published.csv]

One row per setting in the product of the lists (a parameter a reducer does not use is
not varied for it and left empty), plus the stock model (``reducer=stock``) and, with
``--downsample``, the stock model on a uniformly downsampled input (``reducer=Downsample``,
the paper's Figure 6 baseline; ``expedite_mm.utils.downsample``). Per row: fvcore GFLOPs
of the whole network and of the backbone (and their ratio to the stock model at the
config's input size), the latency (timed interleaved with the stock model, so the ratio is
meaningful on a busy machine) and, when ``--checkpoint`` is given, the metric of
``tools/test.py`` on the config's test set (each row's config is written under
``OUT_DIR/configs``). Rows go to the CSV as soon as they are done, and a rerun skips the
rows already there (resumable; sweeps of other settings into the same CSV add to it). The
PNG plots every row of the CSV, ``--plot-y`` against ``--plot-x``, one line per reducer
(and per other varying parameter); by default the metric against GFLOPs when there is a
metric, otherwise GFLOPs against the number of kept tokens (cluster size).

Reducer names: ``Cluster`` (the method), ``AvgPool`` (adaptive average pooling, the
method's reconstruction: paper Table 3), ``Cluster+Bilinear`` (Table 4),
``AvgPool+Bilinear``, ``EViT``, ``ToMe``; ``A+B`` pairs any reducer with a reconstructor.
With a config that reconstructs the head's logits (``reconstruct_placement='logits'``, the
released Segmenter rows) every row keeps that placement, except ``EViT`` and ``ToMe`` rows:
their tokens form no grid for the head, so they reconstruct inside the backbone (after
the last layer) and their head sees full resolution.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from expedite_mm.utils.config import CfgOptionsAction
from expedite_mm.utils.settings import grid_text, parse_grid, reducer_specs, set_reducer

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SETTINGS = ["reducer", "alpha", "grid", "window", "iters", "temperature", "k", "input"]
RESULTS = ["tokens", "gflops", "backbone_gflops", "gflops_ratio", "backbone_ratio",
           "latency_ms", "latency_ratio", "metric_name", "metric"]
COLUMNS = SETTINGS + RESULTS
STOCK, DOWNSAMPLE = "stock", "Downsample"
# Which of the flat expedite parameters each reducer / reconstructor actually reads.
USES = {"Cluster": ("window", "iters", "temperature"), "AvgPool": (),
        "EViT": (), "ToMe": ()}
RECON_USES = {"Cluster": ("temperature", "k"), "Bilinear": (), "Scatter": (), "Unmerge": ()}
BACKBONE_KEY = {"window": "cluster_window", "iters": "cluster_iters",
                "temperature": "temperature", "k": "reconstruct_k"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a config with an expedited backbone (e.g. ExpeditedViT)")
    parser.add_argument("--alpha", type=int, nargs="+", help="cluster_after values "
                        "(default: the config's)")
    parser.add_argument("--grid", nargs="+", help="cluster grids: 28, 20x28 or a ratio 0.7 "
                        "(default: the config's)")
    parser.add_argument("--window", type=int, nargs="+")
    parser.add_argument("--iters", type=int, nargs="+")
    parser.add_argument("--temperature", type=float, nargs="+")
    parser.add_argument("--k", type=int, nargs="+")
    parser.add_argument("--reducer", nargs="+", default=["Cluster"],
                        help="reducers (see below), e.g. Cluster AvgPool+Bilinear EViT ToMe")
    parser.add_argument("--downsample", type=int, nargs="+", default=[],
                        help="also the stock model with the input's short side scaled to these")
    parser.add_argument("--checkpoint", help="weights: with them, tools/test.py evaluates "
                        "every row on the config's test set")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint holding arbitrary objects (unsafe unpickling)")
    parser.add_argument("--allow-partial-load", action="store_true",
                        help="accept a checkpoint whose weights do not all fit the model")
    parser.add_argument("--metric", help="which metric to record (default: mIoU, else the first)")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the latency")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mode", default="predict", choices=("predict", "tensor"))
    parser.add_argument("--shape", type=int, nargs="+", metavar="N",
                        help="input H W for GFLOPs/latency (default: the config's test size)")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    parser.add_argument("--out-dir", default="work_dirs/sweep")
    parser.add_argument("--csv", help="default: OUT_DIR/sweep.csv")
    parser.add_argument("--png", help="default: OUT_DIR/sweep.png")
    parser.add_argument("--plot-x", choices=("tokens", "gflops", "gflops_ratio",
                                             "backbone_ratio", "latency_ms"))
    parser.add_argument("--plot-y", choices=("metric", "gflops", "gflops_ratio", "latency_ms",
                                             "latency_ratio"))
    parser.add_argument("--reference", help="a CSV of published numbers to draw as dashed "
                        "lines (columns: reducer = its label, grid, and the plotted ones)")
    args = parser.parse_args(argv)
    if args.fp16 and args.device != "cuda":
        parser.error("--fp16 needs --device cuda")
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error("--shape takes H W or one size")
    for name in ("repeat", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for label in args.reducer:
        try:
            reducer_specs(label)
        except ValueError as error:
            parser.error(f"--reducer {label}: {error}")
    try:
        args.grid = None if args.grid is None else [parse_grid(g) for g in args.grid]
    except ValueError as error:
        parser.error(f"--grid: {error}")
    args.out_dir = osp.abspath(args.out_dir)
    args.csv = args.csv or osp.join(args.out_dir, "sweep.csv")
    args.png = args.png or osp.join(args.out_dir, "sweep.png")
    return args


# --------------------------------------------------------------------------- settings
def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plan(args, cfg, shape: Tuple[int, int]) -> List[Dict[str, str]]:
    """Every row's settings as strings (the CSV key), stock first."""
    from expedite_mm.ops.cluster import (DEFAULT_ITERS, DEFAULT_K, DEFAULT_TEMPERATURE,
                                         DEFAULT_WINDOW)
    from expedite_mm.core.args import DEFAULT_CLASSIFICATION_TEMPERATURE
    backbone = cfg.model.backbone
    temperature = (DEFAULT_CLASSIFICATION_TEMPERATURE
                   if backbone.get("type") == "ExpeditedVisionTransformer" else DEFAULT_TEMPERATURE)
    defaults = {"window": backbone.get("cluster_window", DEFAULT_WINDOW),
                "iters": backbone.get("cluster_iters", DEFAULT_ITERS),
                "temperature": backbone.get("temperature", temperature),
                "k": backbone.get("reconstruct_k", DEFAULT_K)}
    alphas = args.alpha or [backbone.get("cluster_after")]
    if alphas == [None]:
        raise SystemExit("the config has expediting disabled: give --alpha")
    grids = args.grid or [backbone.get("cluster_grid", 0.7)]
    grids = [parse_grid(g) if isinstance(g, (str, int)) else
             (g if isinstance(g, float) else tuple(g)) for g in grids]
    values = {name: getattr(args, name) or [defaults[name]] for name in defaults}
    empty = {name: "" for name in SETTINGS}
    rows = [dict(empty, reducer=STOCK, input=f"{shape[0]}x{shape[1]}")]
    seen = set()
    for label in args.reducer:
        _, _, reducer, reconstructor = reducer_specs(label)
        used = set(USES[reducer]) | set(RECON_USES[reconstructor])
        lists = [values[name] if name in used else [None] for name in defaults]
        for alpha in alphas:
            for grid in grids:
                for combo in _product(lists):
                    row = dict(empty, reducer=label, alpha=str(alpha), grid=grid_text(grid),
                               input=f"{shape[0]}x{shape[1]}")
                    row.update({name: _fmt(v) for name, v in zip(defaults, combo)})
                    key = tuple(row[c] for c in SETTINGS)
                    if key not in seen:
                        seen.add(key)
                        rows.append(row)
    for size in args.downsample:
        rows.append(dict(empty, reducer=DOWNSAMPLE, input=str(size)))
    return rows


def _product(lists: Sequence[Sequence[Any]]) -> Iterable[Tuple[Any, ...]]:
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for tail in _product(lists[1:]):
            yield (head,) + tail


def row_key(row: Dict[str, str]) -> Tuple[str, ...]:
    return tuple(str(row.get(c, "")) for c in SETTINGS)


def row_config(cfg, row: Dict[str, str]):
    """The config of one row (a copy)."""
    import copy

    from expedite_mm.utils.config import disable_expedite
    from expedite_mm.utils.downsample import uniform_downsample
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


def row_slug(row: Dict[str, str]) -> str:
    parts = [row["reducer"]] + [f"{c[0]}{row[c]}" for c in SETTINGS[1:] if row[c] != ""]
    return re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(parts)).strip("-")


# --------------------------------------------------------------------------- CSV
def read_rows(path: str) -> List[Dict[str, str]]:
    if not osp.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise SystemExit(f"{path} has columns {reader.fieldnames}, expected {COLUMNS}: "
                             f"use another --csv")
        return list(reader)


def append_row(path: str, row: Dict[str, Any]) -> None:
    new = not osp.exists(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({c: _fmt(row.get(c)) for c in COLUMNS})


# --------------------------------------------------------------------------- measuring
class Measurer:
    """Builds the stock model once and measures rows against it."""

    def __init__(self, args, cfg, shape: Tuple[int, int]) -> None:
        from expedite_mm.utils.config import build_model, disable_expedite
        from expedite_mm.utils.flops import model_flops
        self.args, self.cfg, self.shape = args, cfg, shape
        self.stock = build_model(disable_expedite(cfg), args.checkpoint, args.device,
                                 args.trust_checkpoint, args.allow_partial_load)
        self.stock_flops = model_flops(self.stock, shape)
        self.stock_latency: Optional[float] = None

    def flops(self, model, shape) -> Dict[str, Any]:
        from expedite_mm.utils.flops import model_flops
        counted = model_flops(model, shape)
        stock = self.stock_flops
        whole = None if counted.whole is None else counted.whole / 1e9
        return {"gflops": whole, "backbone_gflops": counted.backbone / 1e9,
                "gflops_ratio": (counted.whole / stock.whole
                                 if counted.whole is not None and stock.whole else None),
                "backbone_ratio": counted.backbone / stock.backbone}

    def latency(self, model, shape) -> Dict[str, Any]:
        """Median latency (ms) of ``model``, interleaved with the stock model."""
        import contextlib

        import torch

        from expedite_mm.utils.benchmark import benchmark
        from expedite_mm.utils.config import synthetic_batch, tensor_forward
        args = self.args
        device = torch.device(args.device)
        autocast = (torch.autocast("cuda", dtype=torch.float16) if args.fp16
                    else contextlib.nullcontext())
        stock_inputs = synthetic_batch(self.stock, self.shape, args.batch_size, args.device)

        def runner(m, batch):
            inputs, samples = batch

            def call():
                with torch.no_grad(), autocast:
                    if args.mode == "tensor":
                        return tensor_forward(m, inputs, samples)
                    return m.predict(inputs, samples)
            return call

        models = {"stock": runner(self.stock, stock_inputs)}
        if model is not self.stock:
            models["row"] = runner(model, synthetic_batch(model, shape, args.batch_size,
                                                          args.device))
        timings = benchmark(models, device, repeat=args.repeat, warmup=args.warmup,
                            progress=False, measure_memory=False)
        stock = timings["stock"].median
        self.stock_latency = stock if self.stock_latency is None else self.stock_latency
        own = timings["row"].median if "row" in timings else stock
        return {"latency_ms": own * 1e3, "latency_ratio": own / stock}

    def measure(self, row: Dict[str, str]) -> Dict[str, Any]:
        from expedite_mm.utils.checkpoint import load_state_dict_checked
        from expedite_mm.utils.config import build_model, default_input_shape
        from expedite_mm.ops.cluster import resolve_grid
        cfg = row_config(self.cfg, row)
        if row["reducer"] == STOCK:
            model, shape = self.stock, self.shape
        else:
            model = build_model(cfg, device=self.args.device)
            load_state_dict_checked(model, self.stock.state_dict())
            shape = tuple(default_input_shape(cfg)) if row["reducer"] == DOWNSAMPLE else self.shape
        result: Dict[str, Any] = dict(row)
        patch = _token_stride(model)
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
            result.update(evaluate(self.args, cfg, row))
        del model
        return result


def _token_stride(model) -> Optional[int]:
    """Pixels per token of a plain (or hybrid: ResNet stride x 1x1 patches) ViT backbone."""
    backbone = getattr(model, "backbone", None)
    patch = getattr(backbone, "patch_size", None)
    if not isinstance(patch, int):      # mmpretrain's ViT keeps it in its patch embedding
        stride = getattr(getattr(getattr(backbone, "patch_embed", None), "projection", None),
                         "stride", None)
        if not stride:
            return None
        patch = stride[0]
    return patch * getattr(getattr(backbone, "resnet", None), "stride", 1)


def evaluate(args, cfg, row: Dict[str, str]) -> Dict[str, Any]:
    """Run tools/test.py on the row's config (in a fresh process); the chosen metric."""
    slug = row_slug(row)
    config_path = osp.join(args.out_dir, "configs", slug + ".py")
    metrics_path = osp.join(args.out_dir, "metrics", slug + ".json")
    os.makedirs(osp.dirname(config_path), exist_ok=True)
    os.makedirs(osp.dirname(metrics_path), exist_ok=True)
    cfg.dump(config_path)
    command = [sys.executable, osp.join(ROOT, "tools", "test.py"), config_path, args.checkpoint,
               "--work-dir", osp.join(args.out_dir, "work_dirs", slug),
               "--metrics-json", metrics_path]
    if args.trust_checkpoint:
        command.append("--trust-checkpoint")
    if args.allow_partial_load:
        command.append("--allow-partial-load")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tools/test.py failed for {slug} (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    with open(metrics_path) as f:
        metrics = json.load(f)
    name = args.metric or ("mIoU" if "mIoU" in metrics else next(
        (k for k, v in metrics.items() if isinstance(v, (int, float))), None))
    if name not in metrics:
        raise RuntimeError(f"metric {name!r} not among {sorted(metrics)}")
    return {"metric_name": name, "metric": float(metrics[name])}


# --------------------------------------------------------------------------- plot
def plot(rows: List[Dict[str, str]], path: str, x: Optional[str] = None,
         y: Optional[str] = None, title: str = "",
         reference: Sequence[Dict[str, str]] = ()) -> Tuple[str, str]:
    """One line per reducer (and per other varying setting), plus dashed lines for the
    ``reference`` rows (e.g. published numbers: a CSV with a ``reducer`` label, ``grid``
    and the plotted columns); returns the axes used."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, ax = plt.subplots(figsize=(7, 4.5))
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
    names = {"tokens": "tokens kept (cluster size h*w)", "gflops": "GFLOPs (fvcore, whole)",
             "backbone_gflops": "backbone GFLOPs (fvcore)", "latency_ms": "latency (ms)",
             "gflops_ratio": "GFLOPs / stock", "latency_ratio": "latency / stock",
             "backbone_ratio": "backbone GFLOPs / stock",
             "metric": next((r["metric_name"] for r in rows if r.get("metric_name")), "metric")}
    ax.set_xlabel(names[x])
    ax.set_ylabel(names[y])
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return x, y


def print_table(rows: List[Dict[str, str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    shown = [c for c in COLUMNS if any(r.get(c) not in ("", None) for r in rows)]
    for column in shown:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(*[_short(r.get(c, "")) for c in shown])
    Console(width=200).print(table)


def _short(value: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() and "." not in str(value) else f"{number:.4g}"


# --------------------------------------------------------------------------- main
def main(argv=None) -> List[Dict[str, str]]:
    args = parse_args(argv)
    from tqdm import tqdm

    import expedite_mm.models  # noqa: F401  (registers the backbones)
    from expedite_mm.utils.config import default_input_shape, load_config

    cfg = load_config(args.config, args.cfg_options)
    shape = tuple((args.shape * 2)[:2]) if args.shape else tuple(default_input_shape(cfg))
    rows = plan(args, cfg, shape)
    done = {row_key(r) for r in read_rows(args.csv)}
    todo = [r for r in rows if row_key(r) not in done]
    print(f"sweep: {len(rows)} rows, {len(rows) - len(todo)} already in {args.csv}",
          file=sys.stderr)
    if todo:
        measurer = Measurer(args, cfg, shape)
        for row in tqdm(todo, desc="sweep", unit="row"):
            append_row(args.csv, measurer.measure(row))
    everything = read_rows(args.csv)
    finished = [r for r in everything if row_key(r) in {row_key(p) for p in rows}]
    title = f"{osp.basename(args.config)} at {shape[0]}x{shape[1]}"
    print_table(finished, title)
    reference = []
    if args.reference:
        with open(args.reference, newline="") as f:
            reference = list(csv.DictReader(line for line in f if not line.startswith("#")))
    plot(everything, args.png, args.plot_x, args.plot_y, title, reference)  # + earlier rows
    print(f"wrote {args.csv} and {args.png}", file=sys.stderr)
    return finished


if __name__ == "__main__":
    main()
