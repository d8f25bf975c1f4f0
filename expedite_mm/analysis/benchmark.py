"""Inference latency of a config, expedited vs expediting disabled, in one interleaved run
(``tools/analysis/benchmark.py``, ``expedite-mm benchmark``).

What a run is asked for is :class:`BenchmarkOptions` (the command line's options);
:func:`run_benchmark` builds both models with one set of weights and times them at one
input (:func:`measure`) or over a sweep of sizes and batch sizes written to a CSV and
plotted (:func:`size_sweep`). Timing itself is :func:`expedite_mm.analysis.latency.benchmark`
(interleaved rounds); the ONNX Runtime backend exports with :mod:`expedite_mm.apis.deploy`.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import math
import os
import os.path as osp
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch


class BenchmarkError(RuntimeError):
    """The benchmark cannot run as asked (no CUDA device; an export that ONNX Runtime runs
    differently from PyTorch)."""


#: the columns of a sweep's CSV
CSV_COLUMNS = ["size", "batch_size", "backend", "mode", "stock_median_ms", "stock_iqr_ms",
               "expedited_median_ms", "expedited_iqr_ms", "latency_ratio", "speedup",
               "machine", "date"]


@dataclass
class BenchmarkOptions:
    """What a benchmark is asked for: the options of ``tools/analysis/benchmark.py``, of
    the same names and meanings, already checked by its parser.

    Args:
        config: the config file.
        checkpoint: weights to load into both models (default: random ones; the cost of
            the network does not depend on the weight values).
        trust_checkpoint: load a checkpoint holding arbitrary objects (unsafe unpickling).
        allow_partial_load: accept a checkpoint whose weights do not all fit the model.
        device: ``'cpu'`` or ``'cuda'``.
        fp16: autocast to float16 (CUDA).
        batch_size: the batch of a single measurement.
        repeat: timed calls per model.
        warmup: untimed calls per model first.
        shape: the input H W (or one size), or None: the config's test size.
        mode: ``'predict'`` (``model.predict``, post-processing included) or ``'tensor'``
            (the network alone); ``'tensor'`` with ONNX Runtime.
        backend: ``'pytorch'`` or ``'onnxruntime'`` (exported, CPU).
        compile: ``torch.compile`` the backbone and heads of both models.
        compile_mode: ``torch.compile``'s mode.
        threads: torch / ONNX Runtime CPU threads (None: torch's setting).
        onnx_dir: keep the exported ``.onnx`` files here (None: a temporary folder).
        sizes: sweep these (H, W) inputs instead of one shape.
        batch_sizes: the batch sizes of the sweep.
        csv: the sweep's rows (written as they are measured).
        png: the sweep's plot (latency ratio against the input size).
        no_memory: skip the peak-memory pass.
        cfg_options: config overrides, ``{'dotted.key': value}``.
    """

    config: str
    checkpoint: Optional[str] = None
    trust_checkpoint: bool = False
    allow_partial_load: bool = False
    device: str = "cpu"
    fp16: bool = False
    batch_size: int = 1
    repeat: int = 20
    warmup: int = 3
    shape: Optional[List[int]] = None
    mode: str = "predict"
    backend: str = "pytorch"
    compile: bool = False
    compile_mode: Optional[str] = None
    threads: Optional[int] = None
    onnx_dir: Optional[str] = None
    sizes: Optional[List[Tuple[int, int]]] = None
    batch_sizes: Optional[List[int]] = None
    csv: Optional[str] = None
    png: Optional[str] = None
    no_memory: bool = False
    cfg_options: Dict[str, Any] = field(default_factory=dict)


def run_benchmark(options: BenchmarkOptions) -> Dict[str, Any]:
    """Build the config's model expedited and stock with the same weights and time both;
    prints a table per measurement.

    Args:
        options: what to measure (:class:`BenchmarkOptions`).

    Returns:
        One measurement's summary (:func:`summarize`), or with ``options.sizes`` the
        sweep's ``{'config', 'backend', 'mode', 'rows'}`` (the CSV's rows).

    Raises:
        BenchmarkError: ``device='cuda'`` without a CUDA device, or an export that ONNX
            Runtime runs differently from PyTorch.
    """
    from ..apis.checkpoint import load_state_dict_checked
    from ..apis.config import build_model, default_input_shape, disable_expedite, load_config
    from ..registration import register_all_modules

    register_all_modules()  # registers the backbones
    if options.device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda: no CUDA device is available")
    if options.threads:
        torch.set_num_threads(options.threads)
    cfg = load_config(options.config, options.cfg_options)

    expedited = build_model(cfg, options.checkpoint, options.device, options.trust_checkpoint,
                            options.allow_partial_load)
    stock = build_model(disable_expedite(cfg), device=options.device)
    load_state_dict_checked(stock, expedited.state_dict())   # SwinV2 drops derived tables
    if options.compile:
        for model in (stock, expedited):
            compile_model(model, options.compile_mode)

    with contextlib.ExitStack() as stack:
        onnx_dir = options.onnx_dir
        if options.backend == "onnxruntime" and onnx_dir is None:
            onnx_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="expedite-onnx-"))
        models = {"stock": stock, "expedited": expedited}
        if options.sizes is None:
            shape = (tuple((options.shape * 2)[:2]) if options.shape
                     else default_input_shape(cfg))
            summary = measure(options, models, shape, options.batch_size, onnx_dir)
            print_summary(summary)
        else:
            summary = size_sweep(options, models, onnx_dir)
    return summary


def compile_model(model: torch.nn.Module, mode: Optional[str] = None) -> None:
    """``torch.compile`` the model's backbone, neck and heads in place (same state dict).

    The methods are compiled, not ``__call__`` (``nn.Module.compile``): mmseg's segmentors
    call ``decode_head.forward`` directly, and a backbone with the logits placement runs
    through ``forward_with_state`` (what ``ExpeditedEncoderDecoder`` calls).

    Args:
        model: an mmseg / mmdet model or an mmpretrain classifier.
        mode: ``torch.compile``'s mode (default, reduce-overhead, max-autotune).
    """
    for name in ("backbone", "neck", "decode_head", "auxiliary_head", "rpn_head", "roi_head",
                 "bbox_head", "panoptic_head"):
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Module):
            for method in ("forward", "forward_with_state"):
                if hasattr(module, method):
                    setattr(module, method, torch.compile(getattr(module, method), mode=mode))


def measure(options: BenchmarkOptions, models: Dict[str, torch.nn.Module],
            shape: Tuple[int, int], batch_size: int, onnx_dir: Optional[str] = None
            ) -> Dict[str, Any]:
    """One interleaved benchmark of ``models`` at ``shape`` and ``batch_size``.

    Args:
        options: the backend, mode, device, repeats (:class:`BenchmarkOptions`).
        models: ``{'stock': model, 'expedited': model}``.
        shape: the input (H, W).
        batch_size: the input's batch.
        onnx_dir: where the ONNX Runtime backend keeps its exported files.

    Returns:
        :func:`summarize`'s summary.
    """
    from ..apis.config import synthetic_batch, tensor_forward
    from .latency import benchmark

    device = torch.device(options.device)
    inputs, samples = synthetic_batch(models["expedited"], shape, batch_size, options.device)
    if options.backend == "onnxruntime":
        runners = onnxruntime_runners(options, models, shape, inputs, onnx_dir)
        measure_memory = False
    else:
        autocast = (torch.autocast("cuda", dtype=torch.float16) if options.fp16
                    else contextlib.nullcontext())

        def runner(model):
            def call():
                with torch.no_grad(), autocast:
                    if options.mode == "tensor":
                        return tensor_forward(model, inputs, samples)
                    return model.predict(inputs, samples)
            return call

        runners = {name: runner(model) for name, model in models.items()}
        measure_memory = not options.no_memory
    timings = benchmark(runners, device, repeat=options.repeat, warmup=options.warmup,
                        measure_memory=measure_memory)
    return summarize(options, shape, batch_size, timings, device)


def onnxruntime_runners(options: BenchmarkOptions, models: Dict[str, torch.nn.Module],
                        shape: Tuple[int, int], inputs: torch.Tensor, onnx_dir: str
                        ) -> Dict[str, Callable[[], Any]]:
    """Export every model (dynamic batch, one file per shape) and wrap an ONNX Runtime
    session of it; each export is verified against PyTorch first.

    Args:
        options: the threads of the sessions (:class:`BenchmarkOptions`).
        models: ``{name: model}``.
        shape: the input (H, W) (the exported graph's).
        inputs: the batch the sessions run.
        onnx_dir: where the ``<name>_<H>x<W>.onnx`` files go (reused when there).
    """
    from ..apis.deploy import export_onnx, onnxruntime_session, run_session, verify

    runners = {}
    array = inputs.cpu().numpy()
    for name, model in models.items():
        path = osp.join(onnx_dir, f"{name}_{shape[0]}x{shape[1]}.onnx")
        if not osp.exists(path):
            export_onnx(model, path, shape, batch_size=1, dynamic_batch=True)
            check = verify(model, path, shape, batch_size=1, threads=options.threads)
            if not check.ok:
                raise BenchmarkError(f"{name}: ONNX Runtime differs from PyTorch (relative error "
                                 f"{check.rel:.2e} > {check.tolerance:g})")
        session = onnxruntime_session(path, options.threads)
        runners[name] = (lambda s: lambda: run_session(s, array))(session)
    return runners


def size_sweep(options: BenchmarkOptions, models: Dict[str, torch.nn.Module],
               onnx_dir: Optional[str]) -> Dict[str, Any]:
    """The benchmark over ``options.sizes`` x ``options.batch_sizes``; rows go to the CSV
    as they are measured, the plot to ``options.png``.

    Args:
        options: the sweep (``sizes``, ``batch_sizes``, ``csv``, ``png``) and the rest.
        models: ``{'stock': model, 'expedited': model}``.
        onnx_dir: where the ONNX Runtime backend keeps its exported files.
    """
    rows = []
    os.makedirs(osp.dirname(osp.abspath(options.csv)), exist_ok=True)
    with open(options.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for hw in options.sizes:
            for batch_size in options.batch_sizes:
                summary = measure(options, models, hw, batch_size, onnx_dir)
                print_summary(summary)
                row = {"size": size_label(hw), "batch_size": batch_size,
                       "backend": summary["backend"], "mode": options.mode,
                       "stock_median_ms": summary["stock"]["median_ms"],
                       "stock_iqr_ms": summary["stock"]["iqr_ms"],
                       "expedited_median_ms": summary["expedited"]["median_ms"],
                       "expedited_iqr_ms": summary["expedited"]["iqr_ms"],
                       "latency_ratio": summary["latency_ratio"], "speedup": summary["speedup"],
                       "machine": summary["device_name"],
                       "date": datetime.date.today().isoformat()}
                writer.writerow(row)
                f.flush()
                rows.append(row)
    if options.png:
        plot_sweep(rows, options.png, f"{osp.basename(options.config)} ({backend_name(options)}, "
                                      f"{device_name(torch.device(options.device), options)})")
    return {"config": options.config, "backend": backend_name(options), "mode": options.mode,
            "rows": rows}


def parse_size(text: str) -> Tuple[int, int]:
    """``'512'`` -> (512, 512); ``'352x1216'`` -> (352, 1216).

    Args:
        text: ``S`` or ``HxW``.

    Raises:
        ValueError: anything else.
    """
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"a size is S or HxW (e.g. 512 or 352x1216), got {text!r}")
    h, w = (int(parts[0]),) * 2 if len(parts) == 1 else map(int, parts)
    return h, w


def size_label(hw: Tuple[int, int]) -> str:
    """The CSV's ``size``: ``'512'`` for a square input, ``'352x1216'`` otherwise.

    Args:
        hw: the input (H, W).
    """
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def plot_sweep(rows: Sequence[Dict[str, Any]], path: str, title: str) -> None:
    """Latency ratio expedited / stock against the input size, one line per batch size.

    Args:
        rows: the sweep's rows (:data:`CSV_COLUMNS`; values may be strings, as read back).
        path: the PNG to write.
        title: the plot's title.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for batch_size in sorted({int(r["batch_size"]) for r in rows}):
        points = sorted((math.sqrt(math.prod(parse_size(str(r["size"])))),
                         float(r["latency_ratio"]))
                        for r in rows if int(r["batch_size"]) == batch_size)
        ax.plot(*zip(*points), marker="o", label=f"batch {batch_size}")
    ax.set_xlabel("input side (pixels; sqrt(H x W) where not square)")
    ax.set_ylabel("latency expedited / stock (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def backend_name(options: BenchmarkOptions) -> str:
    """``'onnxruntime'``, ``'pytorch compiled'`` or ``'pytorch'``.

    Args:
        options: the benchmark's backend and ``compile``.
    """
    if options.backend == "onnxruntime":
        return "onnxruntime"
    return "pytorch compiled" if options.compile else "pytorch"


def summarize(options: BenchmarkOptions, shape: Tuple[int, int], batch_size: int,
              timings: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """One measurement as the tool reports it: per model the median and interquartile
    range (ms), images/s, peak memory (MiB) and the latencies; the ratio expedited / stock.

    Args:
        options: the benchmark (:class:`BenchmarkOptions`).
        shape: the input (H, W).
        batch_size: the input's batch.
        timings: ``{'stock': Timing, 'expedited': Timing}``
            (:class:`~expedite_mm.analysis.latency.Timing`).
        device: where it ran.
    """
    rows = {}
    for name, timing in timings.items():
        rows[name] = {
            "median_ms": timing.median * 1e3, "iqr_ms": timing.spread * 1e3,
            "images_per_s": batch_size / timing.median,
            "peak_memory_mib": None if timing.peak_memory is None else timing.peak_memory / 2**20,
            "latencies_ms": [t * 1e3 for t in timing.latencies],
        }
    return {
        "config": options.config, "shape": list(shape), "device": str(device),
        "device_name": device_name(device, options), "fp16": options.fp16,
        "mode": options.mode, "backend": backend_name(options),
        "batch_size": batch_size, "repeat": options.repeat, "warmup": options.warmup,
        **rows,
        "latency_ratio": timings["expedited"].median / timings["stock"].median,
        "speedup": timings["stock"].median / timings["expedited"].median,
    }


def device_name(device: torch.device, options: Optional[BenchmarkOptions] = None) -> str:
    """The GPU's name, or the CPU's with the threads torch uses.

    Args:
        device: where it runs.
        options: the benchmark, for its ``threads`` (default: torch's setting).
    """
    import platform

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = (options.threads if options is not None and options.threads
               else torch.get_num_threads())
    return f"{platform.processor() or platform.machine()}, {threads} threads"


def print_summary(summary: Dict[str, Any]) -> None:
    """One measurement as a table (rich).

    Args:
        summary: :func:`summarize`'s summary.
    """
    from rich.console import Console
    from rich.table import Table

    h, w = summary["shape"]
    table = Table(title=(f"{summary['mode']} latency ({summary['backend']}) at {h}x{w}, batch "
                         f"{summary['batch_size']}, {summary['device_name']}"
                         f"{' fp16' if summary['fp16'] else ''}: {summary['config']}"))
    for column in ("", "median ms", "IQR ms", "images/s", "peak MiB"):
        table.add_column(column, justify="right")
    for name in ("stock", "expedited"):
        row = summary[name]
        memory = row["peak_memory_mib"]
        table.add_row(name, f"{row['median_ms']:.1f}", f"{row['iqr_ms']:.1f}",
                      f"{row['images_per_s']:.2f}", "n/a" if memory is None else f"{memory:.0f}")
    table.add_row("expedited / stock", f"{summary['latency_ratio']:.3f}", "",
                  f"x{summary['speedup']:.2f}", "")
    Console(width=120).print(table)
