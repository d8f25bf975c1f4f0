"""Train an mmseg (or mmdet) config with mmengine's Runner, like mmseg's tools/train.py.

    python tools/train.py CONFIG [--work-dir D] [--resume [CHECKPOINT]] [--amp]
        [--cfg-options k=v ...] [--threads N] [--no-progress]
    torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch

The config's train/val loops, hooks and optimizer run unchanged; checkpoints and logs go to
the work dir (default ``./work_dirs/<config name>``). ``--resume`` continues from the latest
checkpoint of the work dir (or the one given). A progress bar over the iterations (tqdm,
on stderr) shows the rate and the time left; ``--no-progress`` leaves only mmengine's log.
Used to train the project's accuracy benchmark (``configs/benchmark/``, checkpoints.md).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from expedite_mm.utils.config import CfgOptionsAction


class ProgressBarHook(Hook):
    """A tqdm bar over the training iterations (rank 0), with the last loss."""

    priority = "VERY_LOW"

    def before_train(self, runner) -> None:
        from mmengine.dist import is_main_process
        from tqdm import tqdm
        self.bar = None
        if is_main_process():
            self.bar = tqdm(total=runner.max_iters, initial=runner.iter, unit="it",
                            desc="train", mininterval=5.0, dynamic_ncols=True)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.bar is None:
            return
        self.bar.update(runner.iter + 1 - self.bar.n)
        loss = (outputs or {}).get("loss")
        if loss is not None:
            self.bar.set_postfix(loss=f"{float(getattr(loss, 'detach', lambda: loss)()):.3f}",
                                 refresh=False)

    def after_train(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()


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


def build_runner(args) -> Runner:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    runner = Runner.from_cfg(cfg)
    if not args.no_progress:
        runner.register_hook(ProgressBarHook())
    return runner


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    import expedite_mm.models  # noqa: F401  (registers the backbones and datasets)
    from expedite_mm.utils.checkpoint import checkpoint_policy

    runner = build_runner(args)
    # resuming loads our own checkpoints: through the same safe loader as tools/test.py
    with checkpoint_policy(trust=False, source=args.resume or runner.work_dir):
        runner.train()


if __name__ == "__main__":
    main()
