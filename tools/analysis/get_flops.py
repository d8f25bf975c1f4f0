"""fvcore GFLOPs of a config: expedited vs the same config with expediting disabled.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--backbone-only]
        [--cfg-options k=v ...] [--json FILE]

Counts the whole network (``model._forward``: backbone + neck + head, no post-processing,
one ``H x W`` input, as mmseg/mmdet's own FLOP tools do) and the backbone, for both
variants in one run, with the ratio expedited / stock. The clustering and
reconstruction layers are counted (fvcore handles for their ops are registered in
``expedite_mm.analysis.flops``, which also lays out the summary); ops fvcore still cannot
count are listed.
"""
from __future__ import annotations

import argparse
import json
import sys

from expedite_mm.apis.config import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--shape", type=int, nargs="+", metavar="N",
                        help="input H W (or one size for a square); default: the config's "
                             "test crop / resize")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={},
                        help="override config settings, key=value")
    parser.add_argument("--backbone-only", action="store_true",
                        help="count only the backbone (large detectors at large inputs)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error("--shape takes H W or one size")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import expedite_mm
    expedite_mm.register_all_modules()  # registers the backbones
    from expedite_mm.analysis.flops import config_flops, flops_summary, print_flops_summary
    from expedite_mm.apis.config import is_expedited, load_config

    cfg = load_config(args.config, args.cfg_options)
    if not is_expedited(cfg):
        print(f"note: {args.config} has expediting disabled; both columns are the stock model",
              file=sys.stderr)
    shape = None if args.shape is None else (args.shape * 2)[:2]
    summary = flops_summary(args.config, config_flops(cfg, shape,
                                                      backbone_only=args.backbone_only))
    print_flops_summary(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
