"""Test (and evaluate) an mmseg or mmdet config with a checkpoint, like their tools/test.py.

    python tools/test.py CONFIG CHECKPOINT [--work-dir D] [--cfg-options k=v ...]
        [--out results.pkl] [--metrics-json FILE] [--show-dir D] [--trust-checkpoint]
        [--allow-partial-load]
    torchrun --nproc_per_node N tools/test.py CONFIG CHECKPOINT --launcher pytorch

An mmengine ``Runner`` runs the config's test loop and evaluator; the registry scope comes
from the config's ``default_scope`` (mmseg or mmdet), and our configs import
``expedite_mm`` through ``custom_imports``. CHECKPOINT (a path, an http(s):// URL,
open-mmlab://...) loads with torch's safe ``weights_only`` unpickling plus an allow-list of
the types official checkpoints hold; a file holding anything else is refused unless
``--trust-checkpoint`` is given. Its weights must fit the model exactly (missing,
unexpected or mis-shaped tensors are an error naming them) unless ``--allow-partial-load``
is given. Without CUDA, distributed runs use the gloo backend on the CPU. The runner is
:mod:`expedite_mm.apis.runner`'s.
"""
from __future__ import annotations

import argparse
import json
import os

from expedite_mm.apis.config import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="test config file")
    parser.add_argument("checkpoint", help="checkpoint file or URL")
    parser.add_argument("--work-dir", help="where logs and metrics go "
                        "(default ./work_dirs/<config name>)")
    parser.add_argument("--out", help="dump the predictions to this pickle file")
    parser.add_argument("--metrics-json", help="write the metrics to this JSON file (rank 0)")
    parser.add_argument("--show-dir", help="save painted predictions under this directory "
                        "(inside the work dir's timestamped folder)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint holding objects outside the allow-list "
                             "(unpickling can run code from the file: only for files you trust)")
    parser.add_argument("--allow-partial-load", action="store_true",
                        help="accept a checkpoint whose weights do not all fit the model "
                             "(missing/unexpected keys, other shapes): only a warning, the "
                             "rest keeps its initial values")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction,
                        help="override config settings, key=value (as in mmseg/mmdet)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"],
                        default="none", help="job launcher")
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmengine.dist import is_main_process

    from expedite_mm.apis.runner import RunnerOptionError, run_test

    options = dict(work_dir=args.work_dir, cfg_options=args.cfg_options, out=args.out,
                   show_dir=args.show_dir, launcher=args.launcher,
                   allow_partial_load=args.allow_partial_load)
    try:
        metrics = run_test(args.config, args.checkpoint, args.trust_checkpoint, **options)
    except RunnerOptionError as error:
        raise SystemExit(str(error))
    if is_main_process():
        _print_metrics(metrics)
        if args.metrics_json:
            with open(args.metrics_json, "w") as f:
                json.dump(metrics, f, indent=2, default=float)
    return metrics


def _print_metrics(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console(width=100).print(table)


if __name__ == "__main__":
    main()
