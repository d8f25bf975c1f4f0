"""fvcore GFLOPs ratios of the SWAG configs' settings, on narrow models.

The released-row configs, inherited, with ViT-L/16's depth and token grid (24 layers,
512x512 at patch 16: 32x32 tokens) but 64 channels, so that fvcore traces them in
seconds; the ratios are pinned to what we measure (the full-size numbers, against the
release's, are in checkpoints.md). What ViT-L/16's channels change is the weight of the
attention (n^2 C) against the linear layers (n C^2), so the narrow ratios are lower.
"""
import os.path as osp

import pytest

from expedite_mm.apis.config import load_config
from expedite_mm.analysis.flops import config_flops
from harness import ROOT

NARROW = dict(arch=dict(_delete_=True, embed_dims=64, num_layers=24, num_heads=4,
                        feedforward_channels=256))


def narrow(config):
    cfg = load_config(osp.join(ROOT, "configs/swag", config),
                      {"model.backbone.arch": NARROW["arch"], "model.head.in_channels": 64})
    cfg.model.backbone.arch.pop("_delete_", None)
    return cfg


def token_macs(tokens, channels=64, hidden=256):
    """Multiply-adds of one layer's attention on ``tokens[0]`` tokens and MLP on
    ``tokens[1]`` (the linear layers and the two attention products)."""
    n, m = tokens
    return 4 * n * channels ** 2 + 2 * n * n * channels + 2 * m * channels * hidden


@pytest.mark.slow
@pytest.mark.parametrize("config,pinned", [
    ("vit-large-p16_swag-pre_expedite-a12-23x23_in1k-512px.py", 0.6851),
    ("vit-large-p16_swag-pre_evit-k0.7_in1k-512px.py", 0.5451),
    ("vit-large-p16_swag-pre_tome-r20_in1k-512px.py", 0.6768),
])
def test_narrow_ratios(config, pinned):
    result = config_flops(narrow(config))
    assert result["shape"] == (512, 512)
    assert result["ratio_whole"] == pytest.approx(pinned, abs=0.005)
    # the transformer layers' multiply-adds at the release's token counts explain it, up to
    # what fvcore counts besides (norms, patch embedding, clustering, ToMe's matching)
    if "evit" in config:
        counts, n = [], 1024
        for number in range(1, 25):
            kept = -(-7 * n // 10) + 1 if number in (7, 13, 19) else n   # ceil(0.7 n) + fused
            counts.append((n + 1, kept + 1))
            n = kept
    elif "tome" in config:
        counts, n = [], 1025
        for _ in range(24):
            merged = n - min(20, (n - 1) // 2)
            counts.append((n, merged))
            n = merged
    else:
        counts = [(1025, 1025)] * 12 + [(530, 530)] * 12
    layers = sum(token_macs(c) for c in counts) / (24 * token_macs((1025, 1025)))
    assert result["ratio_whole"] == pytest.approx(layers, abs=0.025)
