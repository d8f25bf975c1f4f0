"""Latency of our clustering + reconstruction against the dense N x M formulation
(``tools/analysis/ops_benchmark.py``, whose docstring says what is timed).

The dense baseline (:func:`dense_cluster`, :func:`dense_reconstruct`: the release's
formulation, written here), interleaved timing (:func:`time_interleaved`), one case of
ours vs dense (:func:`operator_case`), the expedited backbone's time for the share column
(:func:`backbone_time`), and the whole run (:func:`run_ops_benchmark`).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .latency import synchronize

#: the configs whose expedited backbone the share column times, by width (C), relative
#: to the shipped ``configs/`` folder
BACKBONE_CONFIGS = {
    1024: "segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py",
    768: "segmenter/segmenter_vit-b_expedite-a6-24x24_ade20k-512x512.py",
}
WINDOW, ITERS, TEMPERATURE, K = 5, 5, 50.0, 20


# --------------------------------------------------------------------------- dense baseline
def dense_candidates(hw: Tuple[int, int], grid: Tuple[int, int], window: int,
                     device: Any) -> torch.Tensor:
    """(N, M) bool: cell i lies in the window x window cells around token p's home cell
    (the label of the nearest-resized cell grid), as the release builds it.

    Args:
        hw: the token grid (H, W).
        grid: the cell grid (h, w).
        window: the window's side in cells.
        device: where the mask goes.
    """
    (H, W), (h, w), r = hw, grid, window // 2
    labels = torch.arange(h * w, device=device, dtype=torch.float32).view(1, 1, h, w)
    home = F.interpolate(labels, size=(H, W), mode="nearest").view(-1).long()    # (N,)
    cells = torch.arange(h * w, device=device)
    return (((home[:, None] // w - cells[None] // w).abs() <= r)
            & ((home[:, None] % w - cells[None] % w).abs() <= r))


def _sqdist(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (z.pow(2).sum(-1, keepdim=True) + s.pow(2).sum(-1).unsqueeze(1)
            - 2 * torch.bmm(z, s.transpose(1, 2)))


def dense_cluster(z: torch.Tensor, hw: Tuple[int, int], grid: Tuple[int, int],
                  window: int = WINDOW, iters: int = ITERS,
                  temperature: float = TEMPERATURE) -> torch.Tensor:
    """(B, N, C) -> (B, M, C) centres with dense (B, N, M) distances every iteration.

    Args:
        z: (B, N, C) tokens on the ``hw`` grid.
        hw: the token grid (H, W).
        grid: the cell grid (h, w).
        window: the candidate window's side in cells.
        iters: EM iterations.
        temperature: divides the squared distances.
    """
    B, N, C = z.shape
    mask = dense_candidates(hw, grid, window, z.device)
    s = F.adaptive_avg_pool2d(z.transpose(1, 2).reshape(B, C, *hw), grid).flatten(2).transpose(1, 2)
    for _ in range(iters):
        affinity = (_sqdist(z, s) / -temperature).masked_fill(~mask, -math.inf).softmax(-1)
        s = torch.bmm(affinity.transpose(1, 2), z) / affinity.sum(1).unsqueeze(-1)
    return s


def dense_reconstruct(z: torch.Tensor, s_before: torch.Tensor, s_after: torch.Tensor,
                      k: int = K, temperature: float = TEMPERATURE) -> torch.Tensor:
    """(B, N, C) tokens from a dense (B, N, M) weight matrix holding each token's top k.

    Args:
        z: (B, N, C) the tokens clustered.
        s_before: (B, M, C) the centres they were clustered to (the weights).
        s_after: (B, M, C) the centres after the layers in between (what is spread back).
        k: the nearest centres each token keeps.
        temperature: divides the squared distances.
    """
    dist = _sqdist(z, s_before)
    weight = torch.exp((dist - dist.amin(-1, keepdim=True)) / -temperature)
    kth = weight.topk(min(k, weight.shape[-1]), dim=-1).values[..., -1:]
    weight = torch.where(weight >= kth, weight, torch.zeros_like(weight))
    return torch.bmm(weight / weight.sum(-1, keepdim=True), s_after)


# --------------------------------------------------------------------------- timing
def time_interleaved(fns: Dict[str, Callable[[], object]], device: torch.device, repeat: int,
                     warmup: int) -> Dict[str, List[float]]:
    """Seconds per call of every function, interleaved, the order alternating per round.

    Args:
        fns: ``{name: function}`` called without arguments.
        device: where they run (synchronised around every call on CUDA).
        repeat: timed rounds.
        warmup: untimed rounds first.
    """
    names, times = list(fns), {name: [] for name in fns}
    for i in range(warmup + repeat):
        for name in (names if i % 2 == 0 else names[::-1]):
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def operator_case(side: int, channels: int, ratio: float, device: torch.device, repeat: int,
                  warmup: int) -> dict:
    """Ours vs dense for one (side, C): clustering, reconstruction and both (ms, best of
    and median), checked first to compute the same function (float64).

    Args:
        side: the token grid's side (N = side**2).
        channels: the token width C.
        ratio: the cluster grid as a ratio of the token grid.
        device: where it runs.
        repeat: timed rounds.
        warmup: untimed rounds first.
    """
    from ..ops import TokenClustering, TokenReconstruction, resolve_grid

    hw = (side, side)
    grid = resolve_grid(ratio, hw)
    z = torch.randn(1, side * side, channels, device=device)
    clustering = TokenClustering(grid, window=WINDOW, iters=ITERS, temperature=TEMPERATURE)
    reconstruction = TokenReconstruction(k=K, temperature=TEMPERATURE)
    with torch.no_grad():
        # both formulations compute the same function (checked in float64, where the
        # fp32 rounding of either does not hide a difference)
        z64 = z.double()
        centers64, state64 = clustering(z64, hw)
        torch.testing.assert_close(centers64, dense_cluster(z64, hw, grid), rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(reconstruction(torch.tanh(centers64), state64),
                                   dense_reconstruct(z64, centers64, torch.tanh(centers64)),
                                   rtol=1e-7, atol=1e-7)
        centers, state = clustering(z, hw)
        refined = torch.tanh(centers)

    def ours_cluster():
        with torch.no_grad():
            return clustering(z, hw)

    def ours_reconstruct():
        with torch.no_grad():
            return reconstruction(refined, state)    # the weights are computed every call

    def dense_c():
        with torch.no_grad():
            return dense_cluster(z, hw, grid)

    def dense_r():
        with torch.no_grad():
            return dense_reconstruct(z, centers, refined)

    times = time_interleaved({"ours_cluster": ours_cluster, "ours_reconstruct": ours_reconstruct,
                              "dense_cluster": dense_c, "dense_reconstruct": dense_r},
                             device, repeat, warmup)
    stats = {name: {"best_ms": min(t) * 1e3, "median_ms": statistics.median(t) * 1e3}
             for name, t in times.items()}
    for variant in ("ours", "dense"):   # both operators per round, summed
        total = [a + b for a, b in zip(times[f"{variant}_cluster"],
                                       times[f"{variant}_reconstruct"])]
        stats[variant] = {"best_ms": min(total) * 1e3, "median_ms": statistics.median(total) * 1e3}
    return {"side": side, "tokens": side * side, "grid": list(grid), "centres": grid[0] * grid[1],
            "channels": channels, **stats,
            "speedup_best": stats["dense"]["best_ms"] / stats["ours"]["best_ms"],
            "speedup_median": stats["dense"]["median_ms"] / stats["ours"]["median_ms"]}


def backbone_time(config: str, side: int, ratio: float, device: torch.device,
                  repeat: int) -> float:
    """Best-of seconds of the config's expedited backbone at ``16 * side`` pixels, with
    the features reconstructed in the backbone (the operators timed here: a config on the
    logits placement reconstructs its head's logits instead, which costs less).

    Args:
        config: an expedited config with a ViT backbone.
        side: the token grid's side.
        ratio: the cluster grid as a ratio of the token grid.
        device: where it runs.
        repeat: timed calls (best of).
    """
    from mmengine.registry import init_default_scope

    from ..apis.config import import_custom_modules, load_config
    cfg = load_config(config)
    import_custom_modules(cfg)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    from mmseg.registry import MODELS
    backbone_cfg = cfg.model.backbone
    patch = backbone_cfg.get("patch_size", 16)
    backbone_cfg.update(img_size=(patch * side, patch * side), cluster_grid=ratio,
                        init_cfg=None, pretrained=None, reconstruct_placement="backbone")
    backbone = MODELS.build(backbone_cfg).to(device)
    backbone.eval()                       # (mmseg's ViT.train() returns None: no chaining)
    x = torch.randn(1, 3, patch * side, patch * side, device=device)
    with torch.no_grad():
        times = time_interleaved({"backbone": lambda: backbone(x)}, device, repeat, 1)
    return min(times["backbone"])


def run_ops_benchmark(sides: Sequence[int] = (40, 48, 64), channels: Sequence[int] = (768, 1024),
                      grid_ratio: float = 0.7, device: str = "cpu", repeat: int = 7,
                      warmup: int = 2, backbones: Optional[Mapping[int, str]] = None,
                      backbone_repeat: int = 3) -> Dict[str, Any]:
    """Ours vs dense for every width and side (a line each as they finish, a table at the
    end), with the share of the expedited backbone where ``backbones`` has the width.

    Args:
        sides: token grid sides (N = side**2).
        channels: token widths C.
        grid_ratio: the cluster grid as a ratio of the token grid.
        device: ``'cpu'`` or ``'cuda'``.
        repeat: timed rounds.
        warmup: untimed rounds first.
        backbones: config files by width whose expedited backbone the share column times
            (None: no share column).
        backbone_repeat: timed calls of each backbone (best of).

    Returns:
        ``{'device', 'threads', 'repeat', 'warmup', 'grid_ratio', 'window', 'iters',
        'temperature', 'k', 'rows'}``, a row per (C, side) (:func:`operator_case`, with
        ``backbone_ms`` and ``share``, None where not timed).
    """
    where = torch.device(device)
    rows = []
    for width in channels:
        for side in sides:
            row = operator_case(side, width, grid_ratio, where, repeat, warmup)
            row["backbone_ms"] = row["share"] = None
            if backbones and width in backbones:
                seconds = backbone_time(backbones[width], side, grid_ratio, where,
                                        backbone_repeat)
                row["backbone_ms"] = seconds * 1e3
                row["share"] = row["ours"]["best_ms"] / row["backbone_ms"]
            rows.append(row)
            print_row(row)
    summary = {"device": device, "threads": torch.get_num_threads(),
               "repeat": repeat, "warmup": warmup, "grid_ratio": grid_ratio,
               "window": WINDOW, "iters": ITERS, "temperature": TEMPERATURE, "k": K,
               "rows": rows}
    print_table(summary)
    return summary


def print_row(row: dict) -> None:
    """One case as a line (best of, ms).

    Args:
        row: :func:`operator_case`'s row.
    """
    print(f"N={row['tokens']} C={row['channels']}: ours {row['ours']['best_ms']:.1f} ms, "
          f"dense {row['dense']['best_ms']:.1f} ms (best of)", flush=True)


def print_table(summary: dict) -> None:
    """Every case as a table (rich).

    Args:
        summary: :func:`run_ops_benchmark`'s summary.
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title=(f"clustering + reconstruction, ours vs dense N x M, batch 1, "
                         f"{summary['device']}, {summary['threads']} threads, best of "
                         f"{summary['repeat']} (median) ms"))
    for column in ("N -> M", "C", "ours cluster", "ours recon", "ours", "dense cluster",
                   "dense recon", "dense", "speed-up", "backbone ms", "share"):
        table.add_column(column, justify="right")
    fmt = lambda s: f"{s['best_ms']:.1f} ({s['median_ms']:.1f})"  # noqa: E731
    for row in summary["rows"]:
        table.add_row(f"{row['tokens']} -> {row['centres']}", str(row["channels"]),
                      fmt(row["ours_cluster"]), fmt(row["ours_reconstruct"]), fmt(row["ours"]),
                      fmt(row["dense_cluster"]), fmt(row["dense_reconstruct"]), fmt(row["dense"]),
                      f"x{row['speedup_best']:.2f} (x{row['speedup_median']:.2f})",
                      "n/a" if row["backbone_ms"] is None else f"{row['backbone_ms']:.0f}",
                      "n/a" if row["share"] is None else f"{100 * row['share']:.2f} %")
    Console(width=160).print(table)
