"""What ``tools/demo.py`` (``make demo``) shows: how the token clustering layer groups a
real photo's patch tokens, drawn with the image rebuilt by token reconstruction
(:func:`draw_clustering`), and a config's fvcore GFLOPs and CPU latency, stock vs
expedited (:func:`compare_model`, :func:`print_comparison`).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F


def patch_tokens(image: np.ndarray, patch: int = 16, size: int = 640) -> torch.Tensor:
    """(H, W, 3) uint8 image -> its (1, (size/patch)^2, 3*patch^2) patch tokens, each pixel
    channel standardised over the image (so distances are on a ViT-feature-like scale).

    Args:
        image: an (H, W, 3) uint8 image (resized to ``size`` x ``size``).
        patch: the patch side in pixels.
        size: the side the image is resized to.
    """
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)
    tokens = F.unfold(x, kernel_size=patch, stride=patch)         # (1, 3*p*p, N)
    return tokens.transpose(1, 2).contiguous()


def draw_clustering(out: str, grid: Tuple[int, int] = (28, 28), patch: int = 16,
                    size: int = 640) -> dict:
    """Cluster the astronaut's patch tokens and save the picture; returns what it drew.

    Args:
        out: the PNG to write (its folder is created).
        grid: the cluster grid (h, w).
        patch: the patch side in pixels.
        size: the side the photo is resized to.

    Returns:
        ``{'labels': each token's cluster (a (size/patch, size/patch) tensor), 'psnr': of
        the tokens rebuilt from the centres (dB), 'clusters_used': clusters holding tokens}``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage import data

    from ..ops import TokenClustering, TokenReconstruction

    image = data.astronaut()
    tokens = patch_tokens(image, patch, size)
    hw = (size // patch, size // patch)
    centers, state = TokenClustering(grid)(tokens, hw)
    # each token's cluster: its strongest candidate among the EM's window of cells
    index, weight = TokenReconstruction(neighbours="local").weights(state)
    labels = index[0].gather(1, weight[0].argmax(1, keepdim=True)).view(hw)
    rebuilt = TokenReconstruction()(centers, state)

    shown = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(),
                          size=(size, size), mode="bilinear", align_corners=False)
    shown = shown[0].permute(1, 2, 0).clamp(0, 255).numpy().astype(np.uint8)
    pixel_labels = labels.repeat_interleave(patch, 0).repeat_interleave(patch, 1).numpy()
    edges = np.zeros(pixel_labels.shape, bool)
    edges[:-1] |= pixel_labels[:-1] != pixel_labels[1:]
    edges[:, :-1] |= pixel_labels[:, :-1] != pixel_labels[:, 1:]
    overlay = shown.copy()
    overlay[edges] = (255, 40, 40)

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean, std = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True)
    folded = F.fold(rebuilt.transpose(1, 2), (size, size), kernel_size=patch, stride=patch)
    rebuilt_image = (folded * std + mean)[0].permute(1, 2, 0).clamp(0, 255).numpy().astype(np.uint8)
    mse = float(((rebuilt - tokens) ** 2).mean())
    psnr = 10 * np.log10(float((tokens.max() - tokens.min()) ** 2) / mse)

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    axes[0].imshow(shown)
    axes[0].set_title(f"input: {hw[0]}x{hw[1]} patch tokens of {patch}x{patch} px")
    axes[1].imshow(overlay)
    axes[1].set_title(f"token clustering -> {grid[0]}x{grid[1]} clusters (boundaries)")
    axes[2].imshow(rebuilt_image)
    axes[2].set_title(f"token reconstruction from the centres ({psnr:.1f} dB)")
    for ax in axes:
        ax.axis("off")
    fig.suptitle("expedite-mm: local soft k-means of patch tokens "
                 "(window 5, 5 iterations, tau 50; sum-normalised kNN reconstruction, k 20)")
    fig.tight_layout()
    os.makedirs(osp.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return {"labels": labels, "psnr": psnr, "clusters_used": int(labels.unique().numel())}


def compare_model(config: str, repeat: int) -> dict:
    """fvcore GFLOPs and CPU latency of the config, stock vs expedited, in one run.

    Args:
        config: the config file (random weights: the cost does not depend on them).
        repeat: timed calls per model (after one warm-up call each).

    Returns:
        ``{'shape', 'flops': config_flops's result, 'timings': per model its Timing}``.
    """
    from ..apis.checkpoint import load_state_dict_checked
    from ..apis.config import (build_model, default_input_shape, disable_expedite, load_config,
                               synthetic_batch)
    from .flops import config_flops
    from .latency import benchmark

    cfg = load_config(config)
    shape = default_input_shape(cfg)
    flops = config_flops(cfg, shape)
    expedited = build_model(cfg)
    stock = build_model(disable_expedite(cfg))
    load_state_dict_checked(stock, expedited.state_dict())
    inputs, samples = synthetic_batch(expedited, shape)

    def run(model):
        def call():
            with torch.no_grad():
                return model.predict(inputs, samples)
        return call

    timings = benchmark({"stock": run(stock), "expedited": run(expedited)},
                        torch.device("cpu"), repeat=repeat, warmup=1, measure_memory=False)
    return {"shape": shape, "flops": flops, "timings": timings}


def print_comparison(config: str, result: dict) -> None:
    """:func:`compare_model`'s result as a table (rich).

    Args:
        config: the config file (its name is in the title).
        result: :func:`compare_model`'s result.
    """
    from rich.console import Console
    from rich.table import Table

    flops, timings = result["flops"], result["timings"]
    h, w = result["shape"]
    table = Table(title=f"Segmenter ViT-L/16 ADE20K at {h}x{w} (random weights), "
                        f"{osp.basename(config)}")
    for column in ("", "stock", "expedited", "expedited / stock"):
        table.add_column(column, justify="right")
    stock, ours = flops["stock"], flops["expedited"]
    table.add_row("GFLOPs, whole model (fvcore)", f"{stock.whole / 1e9:.1f}",
                  f"{ours.whole / 1e9:.1f}", f"{flops['ratio_whole']:.3f}")
    table.add_row("GFLOPs, backbone", f"{stock.backbone / 1e9:.1f}",
                  f"{ours.backbone / 1e9:.1f}", f"{flops['ratio_backbone']:.3f}")
    t_stock, t_ours = timings["stock"].median, timings["expedited"].median
    table.add_row(f"CPU latency, median of {len(timings['stock'].latencies)} (s)",
                  f"{t_stock:.2f}", f"{t_ours:.2f}", f"{t_ours / t_stock:.3f}")
    Console(width=110).print(table)
