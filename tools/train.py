"""Train an mmseg (or mmdet) config with mmengine's Runner, like mmseg's tools/train.py.

    python tools/train.py CONFIG [--work-dir D] [--resume [CHECKPOINT]] [--amp]
        [--cfg-options k=v ...] [--threads N] [--no-progress]
    torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch

The config's train/val loops, hooks and optimizer run unchanged; checkpoints and logs go to
the work dir (default ``./work_dirs/<config name>``). ``--resume`` continues from the latest
checkpoint of the work dir (or the one given). A progress bar over the iterations (tqdm,
on stderr) shows the rate and the time left; ``--no-progress`` leaves only mmengine's log.
Used to train the project's accuracy benchmark (``configs/benchmark/``, checkpoints.md).
The runner is :mod:`expedite_mm.apis.runner`'s.
"""
from __future__ import annotations

import argparse
import os

from expedite_mm.apis.config import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="train config file")
    parser.add_argument("--work-dir", help="where checkpoints and logs go "
                        "(default ./work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume from the latest checkpoint of the work dir, or from "
                             "the given one")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction,
                        help="override config settings, key=value (as in mmseg/mmdet)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"],
                        default="none", help="job launcher")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    from expedite_mm.apis.runner import run_training

    run_training(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
                 resume=args.resume, amp=args.amp, launcher=args.launcher,
                 progress=not args.no_progress)


if __name__ == "__main__":
    main()
