"""CPU/GPU latency of our clustering + reconstruction vs the dense N x M formulation.

    python tools/analysis/ops_benchmark.py [--sides 40 48 64] [--channels 768 1024]
        [--grid-ratio 0.7] [--threads 2] [--repeat 7] [--warmup 2] [--device cpu|cuda]
        [--no-backbone] [--backbone-repeat 3] [--json FILE]

For every token grid ``side x side`` (N = side**2; 40, 48, 64 are ViT/16 at 640, 768 and
1024 pixels) and width C: random tokens (batch 1), the cluster grid ``round(0.7 * side)``,
window 5, 5 EM iterations, tau 50, k 20 (the defaults). Timed interleaved (one call of
each variant per round, the order alternating), ``--repeat`` rounds after ``--warmup``;
best-of and median per variant:

* ``ours``: :class:`~expedite_mm.ops.TokenClustering` and ``TokenReconstruction`` (a fresh
  clustering state per call, so the reconstruction weights are computed every time);
* ``dense``: the dense N x M formulation of the released code, written here as the
  baseline: all N x M squared distances per iteration, a softmax over the window-masked
  candidates, centres normalised by their affinity mass; reconstruction from the N x M
  distances, the top-k kept in a dense N x M weight matrix that multiplies the centres.

``share`` is ``ours`` (best of) as a fraction of the expedited backbone's time at the
matching input (``16 * side`` pixels, random weights, same threads): the ViT-L/16 of the
ADE20K alpha-10 Segmenter config for C=1024, the ViT-B/16 of the alpha-6 one for C=768,
each with ``cluster_grid`` set to the same ratio (``--no-backbone`` skips it).
"""
from __future__ import annotations

import argparse
import json
import math
import os.path as osp
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BACKBONES = {
    1024: osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py"),
    768: osp.join(ROOT, "configs/segmenter/segmenter_vit-b_expedite-a6-24x24_ade20k-512x512.py"),
}
WINDOW, ITERS, TEMPERATURE, K = 5, 5, 50.0, 20


# --------------------------------------------------------------------------- dense baseline
def dense_candidates(hw: Tuple[int, int], grid: Tuple[int, int], window: int,
                     device) -> torch.Tensor:
    """(N, M) bool: cell i lies in the window x window cells around token p's home cell
    (the label of the nearest-resized cell grid), as the release builds it."""
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
    """(B, N, C) -> (B, M, C) centres with dense (B, N, M) distances every iteration."""
    B, N, C = z.shape
    mask = dense_candidates(hw, grid, window, z.device)
    s = F.adaptive_avg_pool2d(z.transpose(1, 2).reshape(B, C, *hw), grid).flatten(2).transpose(1, 2)
    for _ in range(iters):
        affinity = (_sqdist(z, s) / -temperature).masked_fill(~mask, -math.inf).softmax(-1)
        s = torch.bmm(affinity.transpose(1, 2), z) / affinity.sum(1).unsqueeze(-1)
    return s


def dense_reconstruct(z: torch.Tensor, s_before: torch.Tensor, s_after: torch.Tensor,
                      k: int = K, temperature: float = TEMPERATURE) -> torch.Tensor:
    """(B, N, C) tokens from a dense (B, N, M) weight matrix holding each token's top k."""
    dist = _sqdist(z, s_before)
    weight = torch.exp((dist - dist.amin(-1, keepdim=True)) / -temperature)
    kth = weight.topk(min(k, weight.shape[-1]), dim=-1).values[..., -1:]
    weight = torch.where(weight >= kth, weight, torch.zeros_like(weight))
    return torch.bmm(weight / weight.sum(-1, keepdim=True), s_after)


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: Dict[str, Callable[[], object]], device: torch.device, repeat: int,
                     warmup: int) -> Dict[str, List[float]]:
    """Seconds per call of every function, interleaved, the order alternating per round."""
    names, times = list(fns), {name: [] for name in fns}
    for i in range(warmup + repeat):
        for name in (names if i % 2 == 0 else names[::-1]):
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def operator_case(side: int, channels: int, ratio: float, device: torch.device, repeat: int,
                  warmup: int) -> dict:
    """Ours vs dense for one (side, C): clustering, reconstruction and both (seconds)."""
    from expedite_mm.ops import TokenClustering, TokenReconstruction, resolve_grid

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
    logits placement reconstructs its head's logits instead, which costs less)."""
    from mmengine.registry import init_default_scope

    from expedite_mm.utils.config import import_custom_modules, load_config
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[40, 48, 64],
                        help="token grid sides (N = side**2)")
    parser.add_argument("--channels", type=int, nargs="+", default=[768, 1024])
    parser.add_argument("--grid-ratio", type=float, default=0.7,
                        help="cluster grid as a ratio of the token grid")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--no-backbone", action="store_true",
                        help="skip timing the expedited backbones (the share column)")
    parser.add_argument("--backbone-repeat", type=int, default=3,
                        help="timed calls of each backbone (best of)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.backbone_repeat < 1 or args.threads < 1:
        parser.error("--repeat, --backbone-repeat and --threads must be >= 1, --warmup >= 0")
    if not 0 < args.grid_ratio <= 1:
        parser.error("--grid-ratio must be in (0, 1]")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    rows = []
    for channels in args.channels:
        for side in args.sides:
            row = operator_case(side, channels, args.grid_ratio, device, args.repeat, args.warmup)
            row["backbone_ms"] = row["share"] = None
            if not args.no_backbone and channels in BACKBONES:
                seconds = backbone_time(BACKBONES[channels], side, args.grid_ratio, device,
                                        args.backbone_repeat)
                row["backbone_ms"] = seconds * 1e3
                row["share"] = row["ours"]["best_ms"] / row["backbone_ms"]
            rows.append(row)
            _print_row(row)
    summary = {"device": args.device, "threads": torch.get_num_threads(),
               "repeat": args.repeat, "warmup": args.warmup, "grid_ratio": args.grid_ratio,
               "window": WINDOW, "iters": ITERS, "temperature": TEMPERATURE, "k": K,
               "rows": rows}
    _print_table(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _print_row(row: dict) -> None:
    print(f"N={row['tokens']} C={row['channels']}: ours {row['ours']['best_ms']:.1f} ms, "
          f"dense {row['dense']['best_ms']:.1f} ms (best of)", flush=True)


def _print_table(summary: dict) -> None:
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


if __name__ == "__main__":
    main()
