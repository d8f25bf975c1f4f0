"""Walk every config the installed OpenMMLab packages ship: find each backbone, expedite
the transformer ones by the default rule and check them with random weights.

    python tools/analysis/zoo_coverage.py [--packages mmseg mmdet mmpretrain | --sample |
        --configs PKG::CONFIG ...] [--csv F.csv] [--md F.md] [--timeout S] [--memory-gb G]
        [--no-flops] [--resume]

Each transformer config is checked in a child process of its own (``--timeout`` seconds,
``--memory-gb`` above what it starts with): the stock state-dict keys, expediting disabled
bit-equal to the stock backbone, the expedited forward's shapes, and the backbone's fvcore
GFLOPs ratio below 1 at the config's own input size (``--no-flops``: not counted). The CSV
is rewritten after every config (``--resume`` keeps its rows and checks the rest); the
page (docs/coverage.md by default for a full walk) is written at the end.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence


def parse_args(argv=None):
    from expedite_mm.analysis.zoo_coverage import PACKAGES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--packages", nargs="+", choices=PACKAGES, default=list(PACKAGES))
    which.add_argument("--sample", action="store_true",
                       help="the fixed sample make test walks (a few cheap configs)")
    which.add_argument("--configs", nargs="+", metavar="PKG::CONFIG")
    parser.add_argument("--csv", default="docs/figures/coverage.csv")
    parser.add_argument("--md", help="the page to write (default: docs/coverage.md for a "
                                     "walk of whole packages, none otherwise)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per config")
    parser.add_argument("--memory-gb", type=float, default=12, help="memory cap per config")
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs count")
    parser.add_argument("--resume", action="store_true", help="keep the CSV's rows")
    args = parser.parse_args(argv)
    if args.configs and any("::" not in c for c in args.configs):
        parser.error("--configs takes PACKAGE::CONFIG names (mmseg::segmenter/....py)")
    if args.timeout <= 0 or args.memory_gb < 0:
        parser.error("--timeout must be > 0 and --memory-gb >= 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import os.path as osp

    from expedite_mm.analysis import zoo_coverage as zoo
    if args.sample:
        configs = list(zoo.SAMPLE)
    elif args.configs:
        configs = [tuple(c.split("::", 1)) for c in args.configs]
    else:
        configs = [(p, c) for p in args.packages for c in zoo.shipped_configs(p)]
    md = args.md or (None if args.sample or args.configs else "docs/coverage.md")
    done = zoo.read_csv(args.csv) if args.resume and osp.exists(args.csv) else []
    start = time.perf_counter()

    def progress(row):
        status = "pass" if row.passed else ("-" if not row.transformer else "FAIL")
        print(f"{status:4} {row.package}::{row.config} {row.backbone_type} "
              f"{row.gflops_ratio if row.gflops_ratio is not None else ''} {row.reason}",
              flush=True)
    rows = zoo.walk(configs, args.csv, args.timeout, args.memory_gb, not args.no_flops,
                    progress, done)
    seconds = time.perf_counter() - start + sum(r.seconds for r in done)
    if md:
        command = "python tools/analysis/zoo_coverage.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        with open(md, "w") as f:
            f.write(zoo.markdown(rows, command.strip(), seconds))
    transformers = [r for r in rows if r.transformer]
    print(f"{len(rows)} configs, {len(transformers)} with a transformer backbone, "
          f"{sum(r.converted for r in transformers)} converted, "
          f"{sum(r.passed for r in transformers)} passing ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
