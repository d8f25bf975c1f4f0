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
  forward methods, in place; see ``expedite_mm.analysis.benchmark.compile_model``); the
  warm-up calls include the compilation.

``--sizes`` sweeps input sizes (``S`` for S x S, or ``HxW``; times ``--batch-sizes``)
instead of one shape: one row per (size, batch) in ``--csv`` (with the machine and the date), and ``--png`` plots the latency ratio against the input
size, one line per batch size. Keep the cluster grid a ratio of the token grid for a
sweep (e.g. ``--cfg-options model.backbone.cluster_grid=0.7``), so that every size is
reduced alike.
"""
from __future__ import annotations

import argparse
import json
from typing import Tuple

from expedite_mm.analysis.benchmark import (BenchmarkError, BenchmarkOptions, parse_size,
                                            run_benchmark)
from expedite_mm.apis.config import CfgOptionsAction


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
    options = BenchmarkOptions(**{k: v for k, v in vars(args).items() if k != "json"})
    try:
        summary = run_benchmark(options)
    except BenchmarkError as error:
        raise SystemExit(str(error))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _size(text: str) -> Tuple[int, int]:
    """``--sizes``' type: ``'512'`` -> (512, 512); ``'352x1216'`` -> (352, 1216)."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


if __name__ == "__main__":
    main()
