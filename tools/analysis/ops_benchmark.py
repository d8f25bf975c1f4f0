"""CPU/GPU latency of our clustering + reconstruction vs the dense N x M formulation.

    python tools/analysis/ops_benchmark.py [--sides 40 48 64] [--channels 768 1024]
        [--grid-ratio 0.7] [--threads 2] [--repeat 7] [--warmup 2] [--device cpu|cuda]
        [--no-backbone] [--backbone-repeat 3] [--json FILE]

For every token grid ``side x side`` (N = side**2; 40, 48, 64 are ViT/16 at 640, 768 and
1024 pixels) and width C: random tokens (batch 1), the cluster grid ``round(0.7 * side)``,
window 5, 5 EM iterations, tau 50, k 20 (the defaults). Timed interleaved (one call of
each variant per round, the order alternating), ``--repeat`` rounds after ``--warmup``;
best-of and median per variant:

* ``ours``: :class:`~expedite_mm.ops.TokenClustering` and ``TokenReconstruction`` (a fresh
  clustering state per call, so the reconstruction weights are computed every time);
* ``dense``: the dense N x M formulation of the released code, written here as the
  baseline: all N x M squared distances per iteration, a softmax over the window-masked
  candidates, centres normalised by their affinity mass; reconstruction from the N x M
  distances, the top-k kept in a dense N x M weight matrix that multiplies the centres.

``share`` is ``ours`` (best of) as a fraction of the expedited backbone's time at the
matching input (``16 * side`` pixels, random weights, same threads): the ViT-L/16 of the
ADE20K alpha-10 Segmenter config for C=1024, the ViT-B/16 of the alpha-6 one for C=768,
each with ``cluster_grid`` set to the same ratio (``--no-backbone`` skips it). The
measurement is :mod:`expedite_mm.analysis.ops_benchmark`.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp

import torch

from expedite_mm.analysis.ops_benchmark import BACKBONE_CONFIGS, run_ops_benchmark

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BACKBONES = {width: osp.join(ROOT, "configs", name) for width, name in BACKBONE_CONFIGS.items()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[40, 48, 64],
                        help="token grid sides (N = side**2)")
    parser.add_argument("--channels", type=int, nargs="+", default=[768, 1024])
    parser.add_argument("--grid-ratio", type=float, default=0.7,
                        help="cluster grid as a ratio of the token grid")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--no-backbone", action="store_true",
                        help="skip timing the expedited backbones (the share column)")
    parser.add_argument("--backbone-repeat", type=int, default=3,
                        help="timed calls of each backbone (best of)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.backbone_repeat < 1 or args.threads < 1:
        parser.error("--repeat, --backbone-repeat and --threads must be >= 1, --warmup >= 0")
    if not 0 < args.grid_ratio <= 1:
        parser.error("--grid-ratio must be in (0, 1]")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    summary = run_ops_benchmark(args.sides, args.channels, args.grid_ratio, args.device,
                                args.repeat, args.warmup,
                                None if args.no_backbone else BACKBONES, args.backbone_repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
