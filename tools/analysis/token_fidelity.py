"""Weight-free fidelity check of token reduction + reconstruction on real photos.

    python tools/analysis/token_fidelity.py [--images FILE ...] [--grid 20 28] [--tokens 40]
        [--patch 16] [--features raw standardized projected]
        [--relative-temperatures 0.125 0.5 2 | --temperatures 0.3 1 10 50]
        [--normalize sum l2] [--pairs Cluster AvgPool ...] [--k 20] [--window 5] [--iters 5]
        [--json FILE] [--csv FILE]

What it does. Every image (default: the colour photos scikit-image ships) is centre-cropped
to a square, resized to ``tokens*patch`` pixels and cut into ``tokens x tokens`` patches of
``patch x patch`` pixels; each patch (3*patch*patch values) is one token, as in a ViT's
patch embedding. The tokens are used as they are (``raw``: pixels in [0, 1]), normalised
per image and colour channel to zero mean / unit variance (``standardized``), or the
standardized tokens mapped by a fixed random projection to ``--project-dim`` channels
(``projected``, a stand-in for a linear patch embedding). Each reducer then shrinks the
tokens to the same budget (``grid``: h*w tokens) and its reconstructor restores them
immediately (no layers in between, i.e. S_{alpha+beta} = S_alpha), for every
normalisation (``sum``: paper Eq. 4, ``l2``: the released code) and temperature tau.
The temperature divides squared token distances, so its useful range depends on the
token scale: by default every feature kind is tried at ``s/8, s/2, 2s`` (``s``: the
median squared distance of a token to its nearest pooled centre, printed) and at the
paper's tau = 50; ``--temperatures`` gives absolute values instead.
Reported per image, pair, normalisation and tau: PSNR in pixel space (peak 1; standardized
and projected tokens are mapped back exactly: every reconstruction is a linear combination
of tokens) and the relative error ``||Z' - Z|| / ||Z - mean(Z)||`` in feature space.

Pairs (reducer+reconstructor, at equal budget): ``Cluster`` (the method), ``AvgPool``
(pooled centres + the method's reconstruction, the paper's Table 3), ``Cluster+Bilinear``
(Table 4), ``AvgPool+Bilinear`` (the naive grid baseline), ``ToMe`` (bipartite merging on
the tokens + unmerge), ``EViT`` (keep the highest-norm tokens + scatter back).

What it shows, and what not. It isolates the information the reduced set keeps about the
full-resolution tokens and how well the reconstruction weights redistribute it: the
weight-free analogue of Tables 3/4. It does not model the beta transformer layers between
reduction and reconstruction, nor features of a trained network (whose token scale, and so
the best tau, differ), nor any task metric. EViT's scatter copies the tokens it did not
keep from before reduction, so with nothing in between it is exact by construction
(reported as inf); in a network those tokens miss the beta layers, which this check
cannot see. The check itself is :mod:`expedite_mm.analysis.token_fidelity`.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from typing import Dict, Tuple

from expedite_mm.analysis.token_fidelity import (DEFAULT_RELATIVE_TEMPERATURES, FEATURES, PAIRS,
                                                 run_fidelity)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", help="image files (default: scikit-image photos)")
    parser.add_argument("--grid", nargs="+", default=["20", "28"],
                        help="token budgets h x w: 20 or 20x28 (default 20 28)")
    parser.add_argument("--tokens", type=int, default=40, help="token grid side (default 40)")
    parser.add_argument("--patch", type=int, default=16, help="patch side in pixels")
    parser.add_argument("--features", nargs="+", default=["raw", "standardized"],
                        choices=FEATURES)
    parser.add_argument("--project-dim", type=int, default=1024)
    taus = parser.add_mutually_exclusive_group()
    taus.add_argument("--temperatures", type=float, nargs="+",
                      help="absolute temperatures (the same for every feature kind)")
    taus.add_argument("--relative-temperatures", type=float, nargs="+",
                      default=list(DEFAULT_RELATIVE_TEMPERATURES),
                      help="temperatures as multiples of each feature kind's token scale "
                           "(plus the paper's 50); default 0.125 0.5 2")
    parser.add_argument("--normalize", nargs="+", default=["sum", "l2"], choices=("sum", "l2"))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=PAIRS)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json", help="write every measurement and the summary here")
    parser.add_argument("--csv", help="write every measurement here")
    args = parser.parse_args(argv)
    try:
        args.grid = [_grid(g) for g in args.grid]
    except ValueError as error:
        parser.error(str(error))
    if args.tokens < 1 or args.patch < 1 or args.project_dim < 1:
        parser.error("--tokens, --patch and --project-dim must be >= 1")
    if any(g[0] > args.tokens or g[1] > args.tokens for g in args.grid):
        parser.error(f"--grid must not exceed --tokens {args.tokens}")
    for taus in (args.temperatures or [], args.relative_temperatures):
        if any(not math.isfinite(t) or t <= 0 for t in taus):
            parser.error("temperatures must be finite and > 0")
    return args


def _grid(text: str) -> Tuple[int, int]:
    parts = str(text).lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--grid takes sizes like 20 or 20x28, got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def main(argv=None) -> Dict:
    args = parse_args(argv)
    result = run_fidelity(args.images, args.grid, args.tokens, args.patch, args.features,
                          args.project_dim, args.temperatures, args.relative_temperatures,
                          args.normalize, args.pairs, k=args.k, window=args.window,
                          iters=args.iters)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    if args.csv:
        rows = result["rows"]
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return result


if __name__ == "__main__":
    main()
