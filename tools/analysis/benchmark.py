"""Inference latency of a config, expedited vs expediting disabled, in one interleaved run.

    python tools/analysis/benchmark.py CONFIG [--checkpoint FILE|URL [--trust-checkpoint]
        [--allow-partial-load]] [--device cpu|cuda] [--fp16]
        [--batch-size 1] [--repeat 20] [--warmup 3] [--shape H W] [--mode predict|tensor]
        [--backend pytorch|onnxruntime] [--compile [--compile-mode MODE]] [--threads N]
        [--sizes 512 640 352x1216 ... [--batch-sizes 1 2 ...] --csv FILE [--png FILE]]
        [--cfg-options k=v ...] [--json FILE]

Both models share one set of weights (the checkpoint's, or random ones: the cost of the
network does not depend on the weight values) and get the same random input of the
config's test size. ``--mode predict`` (default) times ``model.predict`` — what
``tools/test.py`` runs per image, post-processing included; ``--mode tensor`` times the
network alone (``model._forward``; a classifier's logits). Latencies are measured
interleaved after warm-up; the table shows the median with its interquartile range,
images/s, the peak memory torch allocated during one call, and the ratio expedited /
stock.

Backends:

* ``--backend onnxruntime``: both models are exported to ONNX
  (``tools/deployment/pytorch2onnx.py``: mmseg segmentors with a ViT backbone) and run
  with ONNX Runtime on the CPU (``--threads`` intra-op threads); the exported graph is the
  network (``--mode tensor``). The export is checked against PyTorch first.
* ``--compile``: both models' backbone and heads go through ``torch.compile`` (their
  forward methods, in place; see ``compile_model``); the warm-up calls include the
  compilation.

``--sizes`` sweeps input sizes (``S`` for S x S, or ``HxW``; times ``--batch-sizes``)
instead of one shape: one row per (size, batch) in ``--csv`` (with the machine and the date), and ``--png`` plots the latency ratio against the input
size, one line per batch size. Keep the cluster grid a ratio of the token grid for a
sweep (e.g. ``--cfg-options model.backbone.cluster_grid=0.7``), so that every size is
reduced alike.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import math
import os
import os.path as osp
import tempfile
from typing import Tuple

from expedite_mm.utils.config import CfgOptionsAction

CSV_COLUMNS = ["size", "batch_size", "backend", "mode", "stock_median_ms", "stock_iqr_ms",
               "expedited_median_ms", "expedited_iqr_ms", "latency_ratio", "speedup",
               "machine", "date"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--checkpoint", help="weights to load into both models (optional)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint holding arbitrary objects (unsafe unpickling)")
    parser.add_argument("--allow-partial-load", action="store_true",
                        help="accept a checkpoint whose weights do not all fit the model")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--fp16", action="store_true", help="autocast to float16 (CUDA)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per model first")
    parser.add_argument("--shape", type=int, nargs="+", metavar="N",
                        help="input H W (or one size); default: the config's test size")
    parser.add_argument("--mode", choices=("predict", "tensor"),
                        help="predict (default; PyTorch only) or tensor (the network alone)")
    parser.add_argument("--backend", default="pytorch", choices=("pytorch", "onnxruntime"))
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the backbone and heads of both models")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode (default, reduce-overhead, max-autotune)")
    parser.add_argument("--threads", type=int, help="torch / ONNX Runtime CPU threads")
    parser.add_argument("--onnx-dir", help="keep the exported .onnx files here (default: a "
                                           "temporary directory)")
    parser.add_argument("--sizes", type=_size, nargs="+", metavar="S|HxW",
                        help="sweep inputs S x S, or H x W (e.g. 352x1216) (replaces --shape)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", metavar="B",
                        help="batch sizes of the sweep (default: --batch-size)")
    parser.add_argument("--csv", help="sweep rows (written as they are measured)")
    parser.add_argument("--png", help="sweep plot: latency ratio vs input size")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.fp16 and args.device != "cuda":
        parser.error("--fp16 needs --device cuda (CPU float16 kernels are not representative)")
    for name in ("batch_size", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error("--shape takes H W or one size")
    if args.backend == "onnxruntime":
        if args.mode == "predict":
            parser.error("--backend onnxruntime runs the exported network: --mode tensor")
        if args.device != "cpu" or args.fp16 or args.compile:
            parser.error("--backend onnxruntime runs on the CPU in fp32, without --compile")
        args.mode = "tensor"
    args.mode = args.mode or "predict"
    if args.sizes is None and (args.batch_sizes or args.csv or args.png):
        parser.error("--batch-sizes, --csv and --png belong to a --sizes sweep")
    if args.sizes is not None:
        if args.shape is not None:
            parser.error("--sizes replaces --shape")
        if not args.csv:
            parser.error("--sizes needs --csv")
        args.batch_sizes = args.batch_sizes or [args.batch_size]
        if min([side for hw in args.sizes for side in hw] + args.batch_sizes) < 1:
            parser.error("--sizes and --batch-sizes must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    import expedite_mm.models  # noqa: F401  (registers the backbones)
    from expedite_mm.utils.checkpoint import load_state_dict_checked
    from expedite_mm.utils.config import (build_model, default_input_shape, disable_expedite,
                                          load_config)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.cfg_options)

    expedited = build_model(cfg, args.checkpoint, args.device, args.trust_checkpoint,
                            args.allow_partial_load)
    stock = build_model(disable_expedite(cfg), device=args.device)
    load_state_dict_checked(stock, expedited.state_dict())   # SwinV2 drops derived tables
    if args.compile:
        for model in (stock, expedited):
            compile_model(model, args.compile_mode)

    with contextlib.ExitStack() as stack:
        onnx_dir = args.onnx_dir
        if args.backend == "onnxruntime" and onnx_dir is None:
            onnx_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="expedite-onnx-"))
        models = {"stock": stock, "expedited": expedited}
        if args.sizes is None:
            shape = tuple((args.shape * 2)[:2]) if args.shape else default_input_shape(cfg)
            summary = measure(args, models, shape, args.batch_size, onnx_dir)
            _print_table(summary)
        else:
            summary = sweep(args, models, onnx_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def compile_model(model, mode=None) -> None:
    """``torch.compile`` the model's backbone, neck and heads in place (same state dict).

    The methods are compiled, not ``__call__`` (``nn.Module.compile``): mmseg's segmentors
    call ``decode_head.forward`` directly, and a backbone with the logits placement runs
    through ``forward_with_state`` (what ``ExpeditedEncoderDecoder`` calls).
    """
    import torch
    for name in ("backbone", "neck", "decode_head", "auxiliary_head", "rpn_head", "roi_head",
                 "bbox_head", "panoptic_head"):
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Module):
            for method in ("forward", "forward_with_state"):
                if hasattr(module, method):
                    setattr(module, method, torch.compile(getattr(module, method), mode=mode))


def measure(args, models: dict, shape, batch_size: int, onnx_dir=None) -> dict:
    """One interleaved benchmark of ``models`` at ``shape`` and ``batch_size``."""
    import torch

    from expedite_mm.utils.benchmark import benchmark
    from expedite_mm.utils.config import synthetic_batch, tensor_forward

    device = torch.device(args.device)
    inputs, samples = synthetic_batch(models["expedited"], shape, batch_size, args.device)
    if args.backend == "onnxruntime":
        runners = onnxruntime_runners(args, models, shape, inputs, onnx_dir)
        measure_memory = False
    else:
        autocast = (torch.autocast("cuda", dtype=torch.float16) if args.fp16
                    else contextlib.nullcontext())

        def runner(model):
            def call():
                with torch.no_grad(), autocast:
                    if args.mode == "tensor":
                        return tensor_forward(model, inputs, samples)
                    return model.predict(inputs, samples)
            return call

        runners = {name: runner(model) for name, model in models.items()}
        measure_memory = not args.no_memory
    timings = benchmark(runners, device, repeat=args.repeat, warmup=args.warmup,
                        measure_memory=measure_memory)
    return _summary(args, shape, batch_size, timings, device)


def onnxruntime_runners(args, models: dict, shape, inputs, onnx_dir) -> dict:
    """Export every model (dynamic batch, one file per shape) and wrap an ONNX Runtime
    session of it; each export is verified against PyTorch first."""
    from expedite_mm.utils.deploy import export_onnx, onnxruntime_session, run_session, verify

    runners = {}
    array = inputs.cpu().numpy()
    for name, model in models.items():
        path = osp.join(onnx_dir, f"{name}_{shape[0]}x{shape[1]}.onnx")
        if not osp.exists(path):
            export_onnx(model, path, shape, batch_size=1, dynamic_batch=True)
            check = verify(model, path, shape, batch_size=1, threads=args.threads)
            if not check.ok:
                raise SystemExit(f"{name}: ONNX Runtime differs from PyTorch (relative error "
                                 f"{check.rel:.2e} > {check.tolerance:g})")
        session = onnxruntime_session(path, args.threads)
        runners[name] = (lambda s: lambda: run_session(s, array))(session)
    return runners


def sweep(args, models: dict, onnx_dir) -> dict:
    """The benchmark over ``args.sizes`` x ``args.batch_sizes``; rows go to the CSV as
    they are measured, the plot to ``args.png``."""
    rows = []
    os.makedirs(osp.dirname(osp.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for hw in args.sizes:
            for batch_size in args.batch_sizes:
                summary = measure(args, models, hw, batch_size, onnx_dir)
                _print_table(summary)
                row = {"size": size_label(hw), "batch_size": batch_size, "backend": summary["backend"],
                       "mode": args.mode,
                       "stock_median_ms": summary["stock"]["median_ms"],
                       "stock_iqr_ms": summary["stock"]["iqr_ms"],
                       "expedited_median_ms": summary["expedited"]["median_ms"],
                       "expedited_iqr_ms": summary["expedited"]["iqr_ms"],
                       "latency_ratio": summary["latency_ratio"], "speedup": summary["speedup"],
                       "machine": summary["device_name"],
                       "date": datetime.date.today().isoformat()}
                writer.writerow(row)
                f.flush()
                rows.append(row)
    if args.png:
        import torch
        plot_sweep(rows, args.png, f"{osp.basename(args.config)} ({_backend_name(args)}, "
                                   f"{_device_name(torch.device(args.device), args)})")
    return {"config": args.config, "backend": _backend_name(args), "mode": args.mode,
            "rows": rows}


def _size(text: str) -> Tuple[int, int]:
    """``'512'`` -> (512, 512); ``'352x1216'`` -> (352, 1216)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"a size is S or HxW (e.g. 512 or 352x1216), got {text!r}")
    h, w = (int(parts[0]),) * 2 if len(parts) == 1 else map(int, parts)
    return h, w


def size_label(hw: Tuple[int, int]) -> str:
    """The CSV's ``size``: ``'512'`` for a square input, ``'352x1216'`` otherwise."""
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def plot_sweep(rows, path: str, title: str) -> None:
    """Latency ratio expedited / stock against the input size, one line per batch size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for batch_size in sorted({int(r["batch_size"]) for r in rows}):
        points = sorted((math.sqrt(math.prod(_size(str(r["size"])))), float(r["latency_ratio"]))
                        for r in rows if int(r["batch_size"]) == batch_size)
        ax.plot(*zip(*points), marker="o", label=f"batch {batch_size}")
    ax.set_xlabel("input side (pixels; sqrt(H x W) where not square)")
    ax.set_ylabel("latency expedited / stock (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _backend_name(args) -> str:
    if args.backend == "onnxruntime":
        return "onnxruntime"
    return "pytorch compiled" if args.compile else "pytorch"


def _summary(args, shape, batch_size, timings, device) -> dict:
    rows = {}
    for name, timing in timings.items():
        rows[name] = {
            "median_ms": timing.median * 1e3, "iqr_ms": timing.spread * 1e3,
            "images_per_s": batch_size / timing.median,
            "peak_memory_mib": None if timing.peak_memory is None else timing.peak_memory / 2**20,
            "latencies_ms": [t * 1e3 for t in timing.latencies],
        }
    return {
        "config": args.config, "shape": list(shape), "device": str(device),
        "device_name": _device_name(device, args), "fp16": args.fp16, "mode": args.mode,
        "backend": _backend_name(args),
        "batch_size": batch_size, "repeat": args.repeat, "warmup": args.warmup,
        **rows,
        "latency_ratio": timings["expedited"].median / timings["stock"].median,
        "speedup": timings["stock"].median / timings["expedited"].median,
    }


def _device_name(device, args=None) -> str:
    import platform

    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = (args.threads if args is not None and args.threads else torch.get_num_threads())
    return f"{platform.processor() or platform.machine()}, {threads} threads"


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    h, w = summary["shape"]
    table = Table(title=(f"{summary['mode']} latency ({summary['backend']}) at {h}x{w}, batch "
                         f"{summary['batch_size']}, {summary['device_name']}"
                         f"{' fp16' if summary['fp16'] else ''}: {summary['config']}"))
    for column in ("", "median ms", "IQR ms", "images/s", "peak MiB"):
        table.add_column(column, justify="right")
    for name in ("stock", "expedited"):
        row = summary[name]
        memory = row["peak_memory_mib"]
        table.add_row(name, f"{row['median_ms']:.1f}", f"{row['iqr_ms']:.1f}",
                      f"{row['images_per_s']:.2f}", "n/a" if memory is None else f"{memory:.0f}")
    table.add_row("expedited / stock", f"{summary['latency_ratio']:.3f}", "",
                  f"x{summary['speedup']:.2f}", "")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
