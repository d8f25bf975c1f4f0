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
the paper's Figure 6 baseline; ``expedite_mm.analysis.downsample``). Per row: fvcore GFLOPs
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
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

from expedite_mm.analysis.settings import parse_grid, reducer_specs
from expedite_mm.analysis.sweep import SweepError, SweepOptions, run
from expedite_mm.apis.config import CfgOptionsAction

#: the folder holding tools/ (a checkout, or the installed package's .mim): tools/test.py
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, checked (argparse's usage error, exit 2, on a bad one)."""
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


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    """Run the sweep on the command line ``argv``; this sweep's rows as the CSV holds them
    (a sweep that cannot go on exits with its message, code 1)."""
    args = parse_args(argv)
    try:
        return run(SweepOptions(**vars(args)), ROOT)
    except SweepError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
