"""Inference latency of a config, expedited vs expediting disabled, in one interleaved run.

    python tools/analysis/benchmark.py CONFIG [--checkpoint FILE|URL [--trust-checkpoint]
        [--allow-partial-load]] [--device cpu|cuda] [--fp16]
        [--batch-size 1] [--repeat 20] [--warmup 3] [--shape H W] [--mode predict|tensor]
        [--cfg-options k=v ...] [--json FILE]

Both models share one set of weights (the checkpoint's, or random ones: the cost of the
network does not depend on the weight values) and get the same random input of the
config's test size. ``--mode predict`` (default) times ``model.predict`` — what
``tools/test.py`` runs per image, post-processing included; ``--mode tensor`` times the
network alone (``model._forward``; a classifier's logits). Latencies are measured
interleaved after warm-up; the table shows the median with its interquartile range,
images/s, the peak memory torch allocated during one call, and the ratio expedited / stock.
"""
from __future__ import annotations

import argparse
import contextlib
import json

from expedite_mm.utils.config import CfgOptionsAction


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
    parser.add_argument("--mode", default="predict", choices=("predict", "tensor"))
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
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    import expedite_mm.models  # noqa: F401  (registers the backbones)
    from expedite_mm.utils.benchmark import benchmark
    from expedite_mm.utils.config import (build_model, default_input_shape, disable_expedite,
                                          load_config, synthetic_batch, tensor_forward)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    cfg = load_config(args.config, args.cfg_options)
    shape = tuple((args.shape * 2)[:2]) if args.shape else default_input_shape(cfg)

    expedited = build_model(cfg, args.checkpoint, args.device, args.trust_checkpoint,
                            args.allow_partial_load)
    stock = build_model(disable_expedite(cfg), device=args.device)
    stock.load_state_dict(expedited.state_dict())
    inputs, samples = synthetic_batch(expedited, shape, args.batch_size, args.device)

    autocast = (torch.autocast("cuda", dtype=torch.float16) if args.fp16
                else contextlib.nullcontext())

    def runner(model):
        def call():
            with torch.no_grad(), autocast:
                if args.mode == "tensor":
                    return tensor_forward(model, inputs, samples)
                return model.predict(inputs, samples)
        return call

    timings = benchmark({"stock": runner(stock), "expedited": runner(expedited)}, device,
                        repeat=args.repeat, warmup=args.warmup,
                        measure_memory=not args.no_memory)
    summary = _summary(args, shape, timings, device)
    _print_table(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _summary(args, shape, timings, device) -> dict:
    rows = {}
    for name, timing in timings.items():
        rows[name] = {
            "median_ms": timing.median * 1e3, "iqr_ms": timing.spread * 1e3,
            "images_per_s": args.batch_size / timing.median,
            "peak_memory_mib": None if timing.peak_memory is None else timing.peak_memory / 2**20,
            "latencies_ms": [t * 1e3 for t in timing.latencies],
        }
    return {
        "config": args.config, "shape": list(shape), "device": str(device),
        "device_name": _device_name(device), "fp16": args.fp16, "mode": args.mode,
        "batch_size": args.batch_size, "repeat": args.repeat, "warmup": args.warmup,
        **rows,
        "latency_ratio": timings["expedited"].median / timings["stock"].median,
        "speedup": timings["stock"].median / timings["expedited"].median,
    }


def _device_name(device) -> str:
    import platform

    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    h, w = summary["shape"]
    table = Table(title=(f"{summary['mode']} latency at {h}x{w}, batch {summary['batch_size']}, "
                         f"{summary['device_name']}{' fp16' if summary['fp16'] else ''}: "
                         f"{summary['config']}"))
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
