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
is given. Without CUDA, distributed runs use the gloo backend on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner

from expedite_mm.utils.config import CfgOptionsAction, load_config


class CheckedLoadRunner(Runner):
    """mmengine's ``Runner`` whose ``load_from`` must fit the model: mmengine loads it
    non-strictly and only logs what did not fit (a partly random model then reports
    metrics); here that is a :class:`~expedite_mm.utils.checkpoint.CheckpointMismatchError`
    naming the first keys, unless ``allow_partial_load``."""

    allow_partial_load = False

    def load_checkpoint(self, filename, map_location="cpu", strict=False,
                        revise_keys=[(r"^module.", "")]):  # noqa: B006 (mmengine's signature)
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import _load_checkpoint

        from expedite_mm.utils.checkpoint import load_state_dict_checked
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        load_state_dict_checked(model, checkpoint, source=filename, revise_keys=revise_keys,
                                allow_partial=self.allow_partial_load and not strict)
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint


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


def _enable_visualization(cfg: Config, show_dir: str) -> None:
    hooks = cfg.get("default_hooks") or {}
    if "visualization" not in hooks:
        raise SystemExit("--show-dir needs a VisualizationHook in default_hooks")
    hooks["visualization"]["draw"] = True
    if cfg.get("default_scope") == "mmdet":
        hooks["visualization"]["test_out_dir"] = show_dir
    else:
        cfg.visualizer["save_dir"] = show_dir


def _dump_metric(cfg: Config, out: str) -> dict:
    if not out.endswith((".pkl", ".pickle")):
        raise SystemExit("--out must be a .pkl/.pickle file")
    if cfg.get("default_scope") == "mmdet":
        return dict(type="mmdet.DumpDetResults", out_file_path=out)
    return dict(type="mmengine.DumpResults", out_file_path=out)


def build_runner(args) -> CheckedLoadRunner:
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show_dir:
        _enable_visualization(cfg, args.show_dir)
    if args.out:
        evaluators = cfg.test_evaluator
        evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
        cfg.test_evaluator = evaluators + [_dump_metric(cfg, args.out)]
    if args.launcher == "pytorch":
        _init_cpu_distributed(cfg)
    runner = CheckedLoadRunner.from_cfg(cfg)
    runner.allow_partial_load = args.allow_partial_load
    return runner


def _init_cpu_distributed(cfg: Config) -> None:
    """Without CUDA, start the gloo process group ourselves (mmengine's pytorch launcher
    calls ``torch.cuda.set_device``) and wrap the model in DDP without device ids."""
    import torch
    import torch.distributed as dist
    if torch.cuda.is_available() or dist.is_initialized():
        return
    dist.init_process_group(backend="gloo")
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                 broadcast_buffers=False)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import expedite_mm.models  # noqa: F401  (registers the backbones)
    from expedite_mm.utils.checkpoint import checkpoint_policy
    from mmengine.dist import is_main_process

    runner = build_runner(args)
    # the Runner loads load_from inside test(): every scheme through the safe loader
    with checkpoint_policy(trust=args.trust_checkpoint, source=args.checkpoint):
        metrics = runner.test()
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
