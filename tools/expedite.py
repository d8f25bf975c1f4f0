"""Write the expedited config of a stock one.

    python tools/expedite.py STOCK_CONFIG [--alpha N] [--grid G] [-o OUT.py]
    python tools/expedite.py STOCK_CONFIG --budget-gflops R --checkpoint CKPT
        [--images DIR | --val N] [--work-dir DIR] [-o OUT.py]

STOCK_CONFIG is a path or an OpenMMLab package's config by name
(``mmseg::segmenter/segmenter_vit-l_mask_8xb1-160k_ade20k-640x640.py``). The written
config inherits it by that name, switches the backbone to the expedited type (every stock
key, and so the stock checkpoint's keys, kept) and sets the expedite keys:

* ``--alpha N``: cluster after N layers (of a windowed backbone: of its clustered
  stage's blocks); ``--grid G``: the clustered size -- ViT: ``28``, ``20x28`` or a ratio of
  the token grid's side (``0.7``); Swin, SwinV2, SAM: the clustered window side k (``8``).
  What is not given follows the default rule: alpha = 5/12 of the depth (half up), the
  size 0.7 of the side (docs/tools.md, "expedite").
* ``--budget-gflops R --checkpoint CKPT``: the label-free tuner's choice within a GFLOPs
  ratio budget R (``tools/analysis/autotune.py``, on ``--images`` or the first ``--val``
  test images; its tables and files go to ``--work-dir``).

A backbone no family expedites is refused in one line naming its type and what is
supported (exit 2); nothing is written.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Optional, Sequence


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the stock config: a path or <package>::<config>")
    parser.add_argument("--alpha", type=int, help="cluster_after (default: the rule)")
    parser.add_argument("--grid", help="ViT: 28, 20x28 or a ratio; windowed: k")
    parser.add_argument("--budget-gflops", type=float, metavar="R",
                        help="let the tuner choose within this GFLOPs ratio (0 < R < 1)")
    parser.add_argument("--checkpoint", help="the stock weights (with --budget-gflops)")
    parser.add_argument("--images", help="with --budget-gflops: a folder of your images")
    parser.add_argument("--val", type=int, help="with --budget-gflops: the first N test images")
    parser.add_argument("--work-dir", default="work_dirs/expedite",
                        help="with --budget-gflops: the tuner's outputs and cache")
    parser.add_argument("-o", "--out", help="the written config (default: "
                                            "<stock name>_expedite.py here)")
    args = parser.parse_args(argv)
    if args.budget_gflops is not None:
        if args.alpha is not None or args.grid is not None:
            parser.error("--budget-gflops chooses alpha and grid: give one or the other")
        if not args.checkpoint:
            parser.error("--budget-gflops needs --checkpoint (the tuner runs the model)")
        if not 0 < args.budget_gflops < 1:
            parser.error(f"--budget-gflops must be in (0, 1), got {args.budget_gflops:g}")
        if (args.images is None) == (args.val is None):
            parser.error("--budget-gflops needs --images DIR or --val N")
    elif args.checkpoint or args.images or args.val:
        parser.error("--checkpoint, --images and --val go with --budget-gflops")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = args.out or f"{osp.splitext(osp.basename(args.config.split('::')[-1]))[0]}_expedite.py"
    try:
        if args.budget_gflops is not None:
            from expedite_mm.analysis.autotune import expedite_for_budget
            from expedite_mm.analysis.autotune_space import AutotuneError, AutotuneOptions
            options = AutotuneOptions(config=args.config, checkpoint=args.checkpoint,
                                      budget_gflops=args.budget_gflops, images=args.images,
                                      val=args.val, work_dir=osp.abspath(args.work_dir))
            try:
                text = expedite_for_budget(args.config, options)
            except AutotuneError as error:
                print(f"expedite: error: {error}", file=sys.stderr)
                return error.code
            summary = f"the tuner's choice for a GFLOPs ratio <= {args.budget_gflops:g}"
        else:
            from expedite_mm.analysis.settings import parse_grid
            from expedite_mm.apis.expedite import expedite_config
            size = None if args.grid is None else parse_grid(args.grid)
            result = expedite_config(args.config, args.alpha, size,
                                     header=[f"expedite-mm expedite {args.config}"])
            text = result.text
            summary = (f"{result.stock_type} -> {result.expedited_type}, " +
                       ", ".join(f"{k}={v!r}" for k, v in result.settings))
    except ValueError as error:
        print(f"expedite: error: {error}", file=sys.stderr)
        return 2
    with open(out, "w") as f:
        f.write(text)
    print(f"{out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
