"""fvcore GFLOPs of a config: expedited vs the same config with expediting disabled.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--backbone-only]
        [--cfg-options k=v ...] [--json FILE]

Counts the whole network (``model._forward``: backbone + neck + head, no post-processing,
one ``H x W`` input, as mmseg/mmdet's own FLOP tools do) and the backbone, for both
variants in one run, with the ratio expedited / stock. The clustering and
reconstruction layers are counted (fvcore handles for their ops are registered in
``expedite_mm.utils.flops``); ops fvcore still cannot count are listed.
"""
from __future__ import annotations

import argparse
import json
import sys

from expedite_mm.utils.config import CfgOptionsAction


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
    import expedite_mm.models  # noqa: F401  (registers the backbones)
    from expedite_mm.utils.config import is_expedited, load_config
    from expedite_mm.utils.flops import config_flops

    cfg = load_config(args.config, args.cfg_options)
    if not is_expedited(cfg):
        print(f"note: {args.config} has expediting disabled; both columns are the stock model",
              file=sys.stderr)
    shape = None if args.shape is None else (args.shape * 2)[:2]
    result = config_flops(cfg, shape, backbone_only=args.backbone_only)
    summary = _summary(args.config, result)
    _print_table(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _summary(config: str, result: dict) -> dict:
    stock, ours = result["stock"], result["expedited"]
    g = lambda flops: None if flops is None else flops / 1e9  # noqa: E731
    return {
        "config": config, "shape": list(result["shape"]),
        "stock": {"whole_gflops": g(stock.whole), "backbone_gflops": g(stock.backbone)},
        "expedited": {"whole_gflops": g(ours.whole), "backbone_gflops": g(ours.backbone),
                      "clustering_reconstruction_gflops": g(ours.expedite_ops)},
        "ratio_whole": result["ratio_whole"], "ratio_backbone": result["ratio_backbone"],
        "unsupported_ops": dict(ours.unsupported + stock.unsupported),
        "note": ours.note or stock.note,
    }


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    fmt = lambda v, spec=".1f": "n/a" if v is None else format(v, spec)  # noqa: E731
    h, w = summary["shape"]
    table = Table(title=f"fvcore GFLOPs at {h}x{w}: {summary['config']}")
    for column in ("", "stock", "expedited", "expedited / stock"):
        table.add_column(column, justify="right")
    for part in ("whole", "backbone"):
        table.add_row(part, fmt(summary["stock"][f"{part}_gflops"]),
                      fmt(summary["expedited"][f"{part}_gflops"]),
                      fmt(summary[f"ratio_{part}"], ".3f"))
    table.add_row("of which clustering + reconstruction", "",
                  fmt(summary["expedited"]["clustering_reconstruction_gflops"], ".2f"), "")
    console = Console(width=110)
    console.print(table)
    if summary["note"]:
        console.print(f"note: {summary['note']}")
    if summary["unsupported_ops"]:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(summary["unsupported_ops"].items()))
        console.print(f"not counted by fvcore (element-wise or indexing ops): {ops}")


if __name__ == "__main__":
    main()
