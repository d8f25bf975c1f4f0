"""The main job on an embedded default (no downloads): `make demo`.

1. Builds Segmenter ViT-L/16 for ADE20K (640x640, 40x40 tokens) from our config
   ``configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py`` with RANDOM
   weights (official checkpoints cannot be downloaded here; cost does not depend on the
   weight values), and prints fvcore GFLOPs and CPU latency of the stock and the expedited
   model side by side (alpha=10, 28x28 clusters).
2. Writes ``outputs/demo_clustering.png``: how the token clustering layer groups a real
   photo's 16x16 patch tokens (scikit-image's astronaut, the patches' standardised pixels
   as the tokens, 40x40 tokens -> 28x28 clusters), with the cluster boundaries drawn over
   the image, next to the image rebuilt by token reconstruction from the 784 centres.

    python tools/demo.py [--config CONFIG] [--repeat 3] [--out outputs/demo_clustering.png]
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per model")
    parser.add_argument("--out", default=osp.join(ROOT, "outputs", "demo_clustering.png"))
    parser.add_argument("--skip-model", action="store_true",
                        help="only draw the clustering picture")
    return parser.parse_args(argv)


def patch_tokens(image: np.ndarray, patch: int = 16, size: int = 640) -> torch.Tensor:
    """(H, W, 3) uint8 image -> its (1, (size/patch)^2, 3*patch^2) patch tokens, each pixel
    channel standardised over the image (so distances are on a ViT-feature-like scale)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)
    tokens = F.unfold(x, kernel_size=patch, stride=patch)         # (1, 3*p*p, N)
    return tokens.transpose(1, 2).contiguous()


def draw_clustering(out: str, grid=(28, 28), patch: int = 16, size: int = 640) -> dict:
    """Cluster the astronaut's patch tokens and save the picture; returns what it drew."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage import data

    from expedite_mm.ops import TokenClustering, TokenReconstruction

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
    """fvcore GFLOPs and CPU latency of the config, stock vs expedited, in one run."""
    from expedite_mm.utils.benchmark import benchmark
    from expedite_mm.utils.checkpoint import load_state_dict_checked
    from expedite_mm.utils.config import (build_model, default_input_shape, disable_expedite,
                                          load_config, synthetic_batch)
    from expedite_mm.utils.flops import config_flops

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


def main(argv=None) -> None:
    args = parse_args(argv)
    import expedite_mm.models  # noqa: F401  (registers the backbones)

    if not args.skip_model:
        print_comparison(args.config, compare_model(args.config, args.repeat))
    drawn = draw_clustering(args.out)
    print(f"wrote {args.out}: {drawn['clusters_used']} of 784 clusters hold tokens; "
          f"patch tokens rebuilt from the centres at {drawn['psnr']:.1f} dB PSNR")


if __name__ == "__main__":
    main()
