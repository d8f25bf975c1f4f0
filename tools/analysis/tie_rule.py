"""How many tokens the reconstruction's tie rule touches, on a model and its test images.

``reconstruct_ties='keep'`` keeps, besides a token's k nearest centres, every centre whose
distance is within 8 ulps of the distance products of the k-th (docs/method.md §2); the
released code keeps every centre with ``weight >= kth`` in its own fp32 rounding. The two
agree where the k-th and (k+1)-th distances are exactly equal (identical centres) or far
apart; they can differ only on tokens whose gap is non-zero but inside that band. This
tool counts, over the config's test images (distances re-derived in float64):

* ``band``: tokens whose (k+1)-th distance is within the band of the k-th, not equal in
  float64 -- the only tokens whose reconstruction can differ from the release's;
* ``exact ties``: tokens whose k-th and (k+1)-th distances are equal in float64;
* ``keep != exact-k``: tokens for which ``'keep'`` takes more than k centres (fp32, ours);

and the consequence on the predictions: pixels whose label changes when the model runs
with ``reconstruct_ties='exact'`` instead of ``'keep'``.

    python tools/analysis/tie_rule.py CONFIG CHECKPOINT [--val N] [--cfg-options ...]

The counting is :mod:`expedite_mm.analysis.tie_rule`.
"""
from __future__ import annotations

import argparse
import json

from expedite_mm.analysis.tie_rule import TieRuleError, count_ties, format_counts
from expedite_mm.apis.config import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="an expedited config (mmseg)")
    parser.add_argument("checkpoint", help="its weights")
    parser.add_argument("--val", type=int, default=None, metavar="N",
                        help="the first N images of the config's test set (default: all)")
    parser.add_argument("--json", metavar="F", help="also write the counts to F")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    args = parser.parse_args(argv)
    if args.val is not None and args.val < 1:
        parser.error("--val must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        report = count_ties(args.config, args.checkpoint, args.val, args.cfg_options)
    except TieRuleError as error:
        raise SystemExit(f"tie_rule.py: {error}")
    print(format_counts(args.config, report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
