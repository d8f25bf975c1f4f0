"""The tiny Swin and the per-window reference the Swin tests share (tests/models/test_swin.py,
test_swin_release.py, tests/ops/test_reducers.py): a stock Swin and an ExpeditedSwin with the
same weights, a stock block rebuilt for window k, and the expedited stage written out with
per-window loops (naive_window.py)."""
import importlib

import naive_window
import torch

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedSwin in both registries
from expedite_mm.ops import TokenClustering  # noqa: E402

# A tiny Swin: window 6 (k=4 when clustered), 6 blocks in the expedited third stage.
TINY = dict(embed_dims=16, depths=(2, 2, 6, 2), num_heads=(1, 2, 2, 4), window_size=6,
            mlp_ratio=2, drop_path_rate=0.0)


def stock_swin(package):
    return importlib.import_module(f"{package}.models.backbones").SwinTransformer


def stock_block(package):
    return importlib.import_module(f"{package}.models.backbones.swin").SwinBlock


def registry(package):
    return importlib.import_module(f"{package}.registry").MODELS


def build_pair(package, dtype=torch.float32, **expedite):
    """A stock Swin and an ExpeditedSwin of the same package with the same random weights."""
    stock = stock_swin(package)(**TINY).to(dtype)
    ours = registry(package).build(dict(type="ExpeditedSwin", **TINY, **expedite)).to(dtype)
    ours.load_state_dict(stock.state_dict())
    stock.eval()      # (mmdet's SwinTransformer.train returns None: no chaining)
    ours.eval()
    return stock, ours


def window_k_block(package, block, k):
    """The block as a *stock* SwinBlock built for window k (shift k//2 where it shifted),
    holding the same weights and the independently resized bias table."""
    attn = block.attn
    new = stock_block(package)(
        embed_dims=attn.w_msa.embed_dims, num_heads=attn.w_msa.num_heads,
        feedforward_channels=block.ffn.feedforward_channels, window_size=k,
        shift=attn.shift_size > 0)
    weights = block.state_dict()
    table = weights["attn.w_msa.relative_position_bias_table"]
    weights["attn.w_msa.relative_position_bias_table"] = naive_window.resize_table(table, k)
    weights["attn.w_msa.relative_position_index"] = new.attn.w_msa.relative_position_index
    new.load_state_dict(weights)
    new.to(table.dtype).eval()
    return new


def reference(package, stock, x, stage, cluster_after, reconstruct_after, k,
              clustering, reconstruction, cluster_padding=True):
    """The method (docs/method.md §4) written out: stock stages; in the expedited stage, per-window clustering after
    ``cluster_after`` blocks (loop over windows), the next blocks as stock window-k blocks
    on the clustered map, per-window reconstruction after ``reconstruct_after`` blocks."""
    K = stock.stages[0].blocks[0].attn.window_size
    x, hw = stock.patch_embed(x)
    outs = []
    for i, stage_module in enumerate(stock.stages):
        if i != stage:
            x, hw, out, out_hw = stage_module(x, hw)
        else:
            states, small_hw = None, None

            def cluster(x):
                if cluster_padding:
                    centre_map, states = naive_window.cluster_per_window(x, hw, K, clustering)
                else:
                    centre_map, states = naive_window.cluster_content_per_window(
                        x, hw, K, clustering.grid,
                        lambda grid: TokenClustering(grid, window=clustering.window,
                                                     temperature=clustering.temperature))
                return centre_map.flatten(1, 2), states, tuple(centre_map.shape[1:3])

            def reconstruct(x):
                x = x.view(x.shape[0], *small_hw, -1)
                if cluster_padding:
                    return naive_window.reconstruct_per_window(x, states, hw, K, reconstruction)
                return naive_window.reconstruct_content_per_window(x, states, hw, reconstruction)

            if cluster_after == 0:
                x, states, small_hw = cluster(x)
            for number, block in enumerate(stage_module.blocks, start=1):
                if states is None:
                    x = block(x, hw)
                else:
                    x = window_k_block(package, block, k)(x, small_hw)
                if number == cluster_after:
                    x, states, small_hw = cluster(x)
                elif number == reconstruct_after:
                    x, states = reconstruct(x), None
            out, out_hw = x, hw
            if stage_module.downsample:
                x, hw = stage_module.downsample(x, hw)
        if i in stock.out_indices:
            out = getattr(stock, f"norm{i}")(out)
            outs.append(out.view(-1, *out_hw, out.shape[-1]).permute(0, 3, 1, 2))
    return outs
