"""Latency of several models measured side by side, interleaved (see tools/analysis/benchmark.py).

Interleaving (one call of each model per round, the order alternating between rounds)
exposes every model to the same machine state — clock boosts, thermal throttling,
other processes — so the ratio of two medians is meaningful even on a busy CPU.
:class:`TimingOptions` and :func:`forward_call` are how the tools time one model (its
options, and the call that is timed).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from ..compat import profiler_event_ns


@dataclass
class Timing:
    """Per-call latencies (seconds) of one model and its peak memory (bytes, or None)."""

    latencies: List[float] = field(default_factory=list)
    peak_memory: Optional[int] = None

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    @property
    def spread(self) -> float:
        """Interquartile range (seconds): robust to the odd outlier call."""
        if len(self.latencies) < 2:
            return 0.0
        q = statistics.quantiles(self.latencies, n=4)
        return q[2] - q[0]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU.

    Args:
        device: the device timed.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by torch during one call of ``fn`` beyond what was live before.

    CUDA: the caching allocator's peak statistic. CPU: the profiler's allocation events
    replayed in time order (CPU torch keeps no peak statistic of its own).
    """
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]"), key=profiler_event_ns)
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def benchmark(models: Dict[str, Callable[[], object]], device: torch.device, repeat: int = 20,
              warmup: int = 3, progress: bool = True, measure_memory: bool = True
              ) -> Dict[str, Timing]:
    """Time every ``models[name]()`` ``repeat`` times, interleaved, after ``warmup`` calls each."""
    timings = {name: Timing() for name in models}
    names = list(models)
    rounds = range(warmup + repeat)
    if progress:
        from tqdm import tqdm
        rounds = tqdm(rounds, desc="benchmark (" + " vs ".join(names) + ")", unit="round")
    for i in rounds:
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            models[name]()
            synchronize(device)
            if i >= warmup:
                timings[name].latencies.append(time.perf_counter() - start)
    if measure_memory:
        for name, fn in models.items():
            timings[name].peak_memory = peak_memory(fn, device)
    return timings


@dataclass(kw_only=True)
class TimingOptions:
    """How the tools time a model (``--device --fp16 --batch-size --repeat --warmup
    --mode``); a tool's options dataclass derives from it (and may change the defaults).

    Args:
        device: ``'cpu'`` or ``'cuda'``.
        fp16: call under float16 autocast (CUDA).
        batch_size: the batch of one call.
        repeat: timed calls per model.
        warmup: untimed calls per model first.
        mode: ``'predict'`` (``model.predict``, post-processing included) or ``'tensor'``
            (the network alone).
    """

    device: str = "cpu"
    fp16: bool = False
    batch_size: int = 1
    repeat: int = 20
    warmup: int = 3
    mode: str = "predict"


def forward_call(model: torch.nn.Module, inputs: Any, samples: Any, mode: str = "predict",
                 fp16: bool = False) -> Callable[[], Any]:
    """One call of ``model`` on a batch, as it is timed: without gradients, ``model.predict``
    (or in ``'tensor'`` mode the network alone), under float16 autocast with ``fp16``.

    Args:
        model: the model.
        inputs: the batch's inputs (:func:`expedite_mm.apis.config.synthetic_batch`).
        samples: its data samples.
        mode: ``'predict'`` or ``'tensor'``.
        fp16: autocast to float16 (CUDA).
    """
    import contextlib

    from ..apis.config import tensor_forward
    autocast = (torch.autocast("cuda", dtype=torch.float16) if fp16
                else contextlib.nullcontext())

    def call() -> Any:
        with torch.no_grad(), autocast:
            if mode == "tensor":
                return tensor_forward(model, inputs, samples)
            return model.predict(inputs, samples)
    return call
