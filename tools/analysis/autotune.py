"""Pick the expedite setting for a compute budget, without labels.

    python tools/analysis/autotune.py CONFIG CHECKPOINT
        (--budget-gflops RATIO | --budget-latency-ms MS) [--budget-on whole|backbone]
        [--images DIR | --val N] [--families clustering,avgpool,evit,tome]
        [--work-dir DIR] [--shape H W] [--alphas 4 8 ...] [--grid-ratios 0.5 0.7 ...]
        [--first-images 3] [--eta 3] [--all-feasible] [--repeat 5] [--device cpu|cuda]
        [--trust-checkpoint] [--allow-partial-load] [--cfg-options k=v ...]
        [--validate [--validate-budgets 0.6 0.7 0.8]]

CONFIG is your config: a stock one (mmseg ``VisionTransformer``, mmseg/mmdet
``SwinTransformer``, mmpretrain ``SwinTransformerV2`` / ``ViTSAM`` / ``VisionTransformer``,
``HybridViT``: its backbone becomes our expedited type, every key kept) or an already
expedited one. CHECKPOINT is its weights (path or URL, loaded safely; see checkpoints.md).

The budget. ``--budget-gflops R``: the fvcore GFLOPs of the whole model (``--budget-on
backbone``: of the backbone), expedited / stock, at the config's test input size (or
``--shape``), at most R. ``--budget-latency-ms MS``: the median latency of
``model.predict`` on one input of that size, measured on this machine (``--device``),
interleaved with the stock model, at most MS.

What it does.
1. The search space (docs/autotune.md): the cluster location alpha over the depth (every
   layer, or every ``round(depth / 12)``-th of deep models), the cluster grid as ratios
   of the token grid (windowed backbones: the clustered window size k), for every family
   asked for (``clustering``: the method; ``avgpool``: pooled centres + the method's
   reconstruction; ``evit`` / ``tome``: the baselines at the same token budget, or their
   keep rate / r in a classification ViT), and both placements of the reconstruction
   where the config's head allows the logits one.
2. FLOPs first, each counted once (cached): per chain (family, placement, size; alpha
   free) one fvcore count, of the clustered layers only for plain ViTs (the layers before
   alpha replaced by stubs), at the smallest and largest alpha for windowed backbones;
   every alpha then follows from the per-layer counts (the layers before alpha are the
   stock ones). Settings over the budget are dropped, and so is every setting that a
   feasible one dominates (the same setting with a later alpha or a larger grid also
   fits), unless ``--all-feasible``.
3. Agreement, no labels: the stock model runs once per image (cached); each candidate's
   prediction is scored against it (mIoU of the argmax for segmentation, PQ for panoptic,
   mask PQ for instances, 1-AbsRel for depth, top-1 agreement for classification, cosine
   for SAM embeddings; ``expedite_mm.analysis.agreement``). Successive halving: every
   candidate on the first ``--first-images`` images, the best 1/eta on eta times as many,
   ..., the finalists on all images. Plain ViTs start from the stock model's recorded
   output of layer alpha (``--no-stock-reuse``: run every candidate in full).
4. The choice: the best agreement on all images within the budget, verified by a real
   fvcore count of the written config (latency: measured).

Output in ``--work-dir``: ``autotune.csv`` (every candidate: setting, GFLOPs and ratios,
latency if asked, agreement and on how many images, what became of it), ``autotune.png``
(cost vs agreement, Pareto front marked), ``autotune_config.py`` (``_base_`` = CONFIG plus
the chosen backbone keys), ``autotune.json``; a table on stdout. ``cache.sqlite`` keeps
every measurement, keyed by hashes of the config, checkpoint, image and setting:
interrupt and rerun and nothing finished is measured again. Errors (empty image folder,
unreadable image, a budget nothing meets, a backbone we cannot expedite, ...) are one line
on stderr, exit code 2 (3: no setting meets the budget), and nothing is written.

``--validate`` (with ``--val N``, the config's labelled test set): every feasible setting
up to the largest of ``--validate-budgets`` is run on all images and also scored by the
config's evaluator (true mIoU etc.); reports Spearman's rho between agreement and the true
metric, and per budget the true metric of the tuner's pick against the best setting of the
exhaustive labelled search (``validation.csv``, ``validation.json``, ``validation.png``).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

from expedite_mm.analysis.autotune import (DEFAULT_KEEP_RATES, DEFAULT_RATIOS, DEFAULT_TOME_R,
                                           DEFAULT_VALIDATE_BUDGETS, SEARCH_FAMILIES,
                                           AutotuneError, AutotuneOptions, run)
from expedite_mm.apis.config import CfgOptionsAction


# --------------------------------------------------------------------------- arguments
def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, checked (argparse's usage error, exit 2, on a bad one)."""
    parser = argparse.ArgumentParser(
        prog="autotune.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="your config (stock or expedited backbone)")
    parser.add_argument("checkpoint", help="its weights: a path or URL")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-gflops", type=_ratio, metavar="RATIO",
                        help="GFLOPs of the expedited model / the stock model, in (0, 1)")
    budget.add_argument("--budget-latency-ms", type=float, metavar="MS",
                        help="median latency of one input on this machine, in ms")
    parser.add_argument("--budget-on", choices=("whole", "backbone"), default="whole",
                        help="what --budget-gflops counts (default: the whole model)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="a folder of your images (searched "
                        "recursively for .jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp)")
    source.add_argument("--val", type=int, metavar="N",
                        help="the first N images of the config's test set (default 20 "
                             "without --images)")
    parser.add_argument("--families", default="clustering",
                        help="comma-separated: clustering (the method), avgpool, evit, tome "
                             "(default: clustering)")
    parser.add_argument("--work-dir", default="work_dirs/autotune")
    parser.add_argument("--shape", type=int, nargs="+", metavar="N",
                        help="input H W for the budget (default: the config's test size)")
    parser.add_argument("--alphas", type=int, nargs="+",
                        help="cluster_after values (default: every round(depth/12)-th layer)")
    parser.add_argument("--grid-ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS),
                        help="cluster grid sides as ratios of the token grid (windowed "
                             "backbones: of the window); default 0.2 ... 0.9")
    parser.add_argument("--keep-rates", type=float, nargs="+", default=list(DEFAULT_KEEP_RATES),
                        help="classification EViT keep rates")
    parser.add_argument("--tome-r", type=int, nargs="+", default=list(DEFAULT_TOME_R),
                        help="classification ToMe r values")
    parser.add_argument("--first-images", type=int, default=3,
                        help="successive halving: images of the first round (default 3)")
    parser.add_argument("--eta", type=int, default=3,
                        help="successive halving: keep 1/eta of the candidates, eta times "
                             "the images, per round (default 3)")
    parser.add_argument("--all-feasible", action="store_true",
                        help="measure every setting within the budget, not only those no "
                             "feasible setting dominates")
    parser.add_argument("--repeat", type=int, default=5,
                        help="latency: timed calls per model (interleaved; default 5)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint holding arbitrary objects (unsafe unpickling)")
    parser.add_argument("--allow-partial-load", action="store_true",
                        help="accept a checkpoint whose weights do not all fit the model")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    parser.add_argument("--validate", action="store_true",
                        help="with --val: also the config's evaluator on every feasible "
                             "setting; Spearman rho and the picks against the labelled oracle")
    parser.add_argument("--validate-budgets", type=_ratio, nargs="+",
                        default=list(DEFAULT_VALIDATE_BUDGETS),
                        help="GFLOPs budgets of --validate (default 0.6 0.7 0.8)")
    parser.add_argument("--no-stock-reuse", action="store_true",
                        help="run every candidate in full (plain ViTs otherwise start from "
                             "the stock model's output of layer alpha, which is the same)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    problems = [
        (args.shape is not None and len(args.shape) not in (1, 2), "--shape takes H W or one size"),
        (args.budget_latency_ms is not None and not args.budget_latency_ms > 0,
         "--budget-latency-ms must be > 0"),
        (args.first_images < 1 or args.repeat < 1, "--first-images and --repeat must be >= 1"),
        (args.eta < 2, "--eta must be >= 2"),
        (args.val is not None and args.val < 1, "--val must be >= 1"),
        (any(not 0 < r < 1 for r in args.grid_ratios + args.keep_rates),
         "--grid-ratios and --keep-rates take values in (0, 1)"),
        (any(r < 1 for r in args.tome_r) or any(a < 0 for a in args.alphas or []),
         "--tome-r must be >= 1 and --alphas >= 0")]
    for bad, message in problems:
        if bad:
            parser.error(message)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in args.families if f not in SEARCH_FAMILIES]
    if unknown or not args.families:
        parser.error(f"--families takes a comma-separated list of {', '.join(SEARCH_FAMILIES)}; "
                     f"got {args.families or 'nothing'}")
    if args.validate:
        if args.images or args.budget_latency_ms is not None:
            parser.error("--validate needs the config's labelled test set (--val N) and a "
                         "GFLOPs budget")
        if args.budget_gflops is None:      # the written config's budget: the largest
            args.budget_gflops = max(args.validate_budgets)
    elif args.budget_gflops is None and args.budget_latency_ms is None:
        parser.error("give a budget: --budget-gflops RATIO or --budget-latency-ms MS")
    if args.images is None and args.val is None:
        args.val = 20
    args.work_dir = osp.abspath(args.work_dir)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the tuner on the command line ``argv``; the exit code (0, 2: bad input, 3: no
    setting meets the budget, 130: interrupted); errors are one line on stderr."""
    args = parse_args(argv)
    try:
        return run(AutotuneOptions(**vars(args)))
    except AutotuneError as error:
        print(f"autotune.py: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"autotune.py: interrupted; rerun the same command to resume (finished "
              f"measurements are in {osp.join(args.work_dir, 'cache.sqlite')})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
