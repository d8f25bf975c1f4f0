"""mmengine's ``Runner`` as ``tools/test.py`` and ``tools/train.py`` set it up: a config's
test loop and evaluator with a checkpoint that must fit the model
(:class:`CheckedLoadRunner`, :func:`build_test_runner`, :func:`run_test`), and its
training loop with a progress bar (:class:`ProgressBarHook`, :func:`build_train_runner`,
:func:`run_training`).

The registry scope comes from the config's ``default_scope`` (mmseg or mmdet); every
checkpoint, whatever its scheme, loads through the safe loader
(:func:`~expedite_mm.apis.checkpoint.checkpoint_policy`).
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, Optional

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from .checkpoint import checkpoint_policy, load_state_dict_checked
from .config import load_config


class RunnerOptionError(ValueError):
    """An option of the test runner that does not fit the config (the message names it as
    ``tools/test.py``'s command line does)."""


class CheckedLoadRunner(Runner):
    """mmengine's ``Runner`` whose ``load_from`` must fit the model: mmengine loads it
    non-strictly and only logs what did not fit (a partly random model then reports
    metrics); here that is a :class:`~expedite_mm.apis.checkpoint.CheckpointMismatchError`
    naming the first keys, unless ``allow_partial_load``."""

    allow_partial_load = False

    def load_checkpoint(self, filename, map_location="cpu", strict=False,
                        revise_keys=[(r"^module.", "")]):  # noqa: B006 (mmengine's signature)
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import _load_checkpoint

        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        load_state_dict_checked(model, checkpoint, source=filename, revise_keys=revise_keys,
                                allow_partial=self.allow_partial_load and not strict)
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint


def _enable_visualization(cfg: Config, show_dir: str) -> None:
    hooks = cfg.get("default_hooks") or {}
    if "visualization" not in hooks:
        raise RunnerOptionError("--show-dir needs a VisualizationHook in default_hooks")
    hooks["visualization"]["draw"] = True
    if cfg.get("default_scope") == "mmdet":
        hooks["visualization"]["test_out_dir"] = show_dir
    else:
        cfg.visualizer["save_dir"] = show_dir


def _dump_metric(cfg: Config, out: str) -> dict:
    if not out.endswith((".pkl", ".pickle")):
        raise RunnerOptionError("--out must be a .pkl/.pickle file")
    if cfg.get("default_scope") == "mmdet":
        return dict(type="mmdet.DumpDetResults", out_file_path=out)
    return dict(type="mmengine.DumpResults", out_file_path=out)


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


def _work_dir(cfg: Config, config: str, work_dir: Optional[str]) -> str:
    """``work_dir``, else the config's own, else ``./work_dirs/<config name>``."""
    if work_dir is not None:
        return work_dir
    if cfg.get("work_dir") is not None:
        return cfg.work_dir
    return osp.join("./work_dirs", osp.splitext(osp.basename(config))[0])


def build_test_runner(config: str, checkpoint: str, work_dir: Optional[str] = None,
                      cfg_options: Optional[Dict[str, Any]] = None, out: Optional[str] = None,
                      show_dir: Optional[str] = None, launcher: str = "none",
                      allow_partial_load: bool = False) -> CheckedLoadRunner:
    """The runner of ``config``'s test loop with ``checkpoint`` as ``load_from``.

    Args:
        config: the config file (mmseg or mmdet).
        checkpoint: its weights: a path, an http(s):// URL, open-mmlab://...
        work_dir: where logs and metrics go (default: the config's, else
            ``./work_dirs/<config name>``).
        cfg_options: config overrides, ``{'dotted.key': value}``.
        out: also dump the predictions to this ``.pkl``/``.pickle`` file.
        show_dir: save painted predictions under this folder (the config needs a
            ``VisualizationHook`` in ``default_hooks``).
        launcher: mmengine's job launcher (``'none'``, ``'pytorch'``, ``'slurm'``, ``'mpi'``);
            ``'pytorch'`` without CUDA runs gloo on the CPU.
        allow_partial_load: accept weights that do not all fit the model (a warning).

    Raises:
        RunnerOptionError: ``out`` is not a pickle file, or ``show_dir`` without a
            ``VisualizationHook``.
    """
    cfg = load_config(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = _work_dir(cfg, config, work_dir)
    cfg.load_from = checkpoint
    if show_dir:
        _enable_visualization(cfg, show_dir)
    if out:
        evaluators = cfg.test_evaluator
        evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
        cfg.test_evaluator = evaluators + [_dump_metric(cfg, out)]
    if launcher == "pytorch":
        _init_cpu_distributed(cfg)
    runner = CheckedLoadRunner.from_cfg(cfg)
    runner.allow_partial_load = allow_partial_load
    return runner


def run_test(config: str, checkpoint: str, trust_checkpoint: bool = False,
             **options: Any) -> Dict[str, Any]:
    """Test (and evaluate) ``checkpoint`` on ``config``'s test set; returns the metrics.

    Args:
        config: the config file (mmseg or mmdet).
        checkpoint: its weights (a path or URL), loaded with torch's safe ``weights_only``
            unpickling plus an allow-list of the types official checkpoints hold.
        trust_checkpoint: load a checkpoint holding objects outside the allow-list
            (unpickling can run code from the file: only for files you trust).
        **options: :func:`build_test_runner`'s keyword arguments.
    """
    from ..registration import register_all_modules
    register_all_modules()                   # the backbones and datasets
    runner = build_test_runner(config, checkpoint, **options)
    # the Runner loads load_from inside test(): every scheme through the safe loader
    with checkpoint_policy(trust=trust_checkpoint, source=checkpoint):
        return runner.test()


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


def build_train_runner(config: str, work_dir: Optional[str] = None,
                       cfg_options: Optional[Dict[str, Any]] = None,
                       resume: Optional[str] = None, amp: bool = False, launcher: str = "none",
                       progress: bool = True) -> Runner:
    """The runner of ``config``'s training loop (its hooks and optimizer unchanged).

    Args:
        config: the config file (mmseg or mmdet).
        work_dir: where checkpoints and logs go (default: the config's, else
            ``./work_dirs/<config name>``).
        cfg_options: config overrides, ``{'dotted.key': value}``.
        resume: ``'auto'`` (the latest checkpoint of the work dir), a checkpoint, or None.
        amp: automatic mixed precision (``AmpOptimWrapper``, dynamic loss scale).
        launcher: mmengine's job launcher (``'none'``, ``'pytorch'``, ``'slurm'``, ``'mpi'``).
        progress: add :class:`ProgressBarHook`.
    """
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = _work_dir(cfg, config, work_dir)
    if amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        cfg.resume, cfg.load_from = True, resume
    runner = Runner.from_cfg(cfg)
    if progress:
        runner.register_hook(ProgressBarHook())
    return runner


def run_training(config: str, **options: Any) -> Runner:
    """Train ``config`` (:func:`build_train_runner`'s options); returns the runner.

    Args:
        config: the config file (mmseg or mmdet).
        **options: :func:`build_train_runner`'s keyword arguments.
    """
    from ..registration import register_all_modules
    register_all_modules()                   # the backbones and datasets
    runner = build_train_runner(config, **options)
    # resuming loads our own checkpoints: through the same safe loader as tools/test.py
    with checkpoint_policy(trust=False, source=options.get("resume") or runner.work_dir):
        runner.train()
    return runner
