"""Latency of several models measured side by side, interleaved (see tools/analysis/benchmark.py).

Interleaving (one call of each model per round, the order alternating between rounds)
exposes every model to the same machine state — clock boosts, thermal throttling,
other processes — so the ratio of two medians is meaningful even on a busy CPU.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from .compat import profiler_event_ns


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by torch during one call of ``fn`` beyond what was live before.

    CUDA: the caching allocator's peak statistic. CPU: the profiler's allocation events
    replayed in time order (CPU torch keeps no peak statistic of its own).
    """
    if device.type == "cuda":
        _synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _synchronize(device)
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
            _synchronize(device)
            start = time.perf_counter()
            models[name]()
            _synchronize(device)
            if i >= warmup:
                timings[name].latencies.append(time.perf_counter() - start)
    if measure_memory:
        for name, fn in models.items():
            timings[name].peak_memory = peak_memory(fn, device)
    return timings
