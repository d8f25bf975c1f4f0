"""ExpeditedViTSAM against mmpretrain's ViTSAM (SAM's image encoder, docs/method.md §4.3).

The reference re-derives the expedited encoder from stock parts only: stock layers before
clustering, a loop over windows clustering each K x K window on its own
(tests/helpers/naive_window.py), the clustered layers as *stock* SAM layers built for window k
(or, for the global layers, for the whole clustered map) holding the same weights with
their relative-position tables resized by a naive 1-D linear interpolation, a loop over
windows reconstructing each from its own centres, and the stock neck.
"""
import glob
import importlib
import importlib.util
import os.path as osp
import warnings

import naive_window
import numpy as np
import pytest
import torch

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedViTSAM
from expedite_mm.models.vit_sam import ExpeditedViTSAM, ViTSAM
from expedite_mm.ops import TokenClustering, TokenReconstruction
from expedite_mm.apis.config import build_model, disable_expedite, load_config
from harness import ROOT, assert_stock_fallback_once, command_json, run_command

_stock = importlib.import_module("mmpretrain.models.backbones.vit_sam")
PACKAGES = ["mmdet", "mmseg"]
# A tiny SAM encoder: window 6 (k=4 when clustered), global attention in layers 3 and 6.
ARCH = dict(embed_dims=32, num_layers=6, num_heads=2, feedforward_channels=64,
            global_attn_indexes=[2, 5])
TINY = dict(arch=ARCH, img_size=160, patch_size=16, out_channels=16, window_size=6)
OPS = dict(cluster_window=3, temperature=20.0, reconstruct_k=6, reconstruct_normalize="l2",
           reconstruct_ties="keep")


def registry(package):
    return importlib.import_module(f"{package}.registry").MODELS


def build_pair(package="mmseg", dtype=torch.float32, **kwargs):
    """A stock ViTSAM and an ExpeditedViTSAM with the same random weights (eval mode)."""
    expedite = {k: v for k, v in kwargs.items() if k in ExpeditedViTSAM.expedite_family.names()}
    stock_kwargs = {k: v for k, v in kwargs.items() if k not in expedite}
    stock = ViTSAM(**{**TINY, **stock_kwargs}).to(dtype)
    ours = registry(package).build(dict(type="ExpeditedViTSAM", **{**TINY, **kwargs})).to(dtype)
    ours.load_state_dict(stock.state_dict())
    stock.eval()
    ours.eval()
    return stock, ours


def stock_layer(layer, window_size, map_size, dtype):
    """``layer`` as a stock SAM layer built for ``window_size`` (0: global attention over a
    ``map_size`` map), same weights, its relative-position tables resized to the new size
    by linear interpolation written out (align_corners=False)."""
    new = _stock.TransformerEncoderLayer(
        embed_dims=layer.embed_dims, num_heads=layer.attn.num_heads,
        feedforward_channels=layer.ffn.feedforward_channels, use_rel_pos=True,
        window_size=window_size, input_size=map_size, norm_cfg=dict(type="LN", eps=1e-6))
    weights = layer.state_dict()
    for name, size in new.state_dict().items():
        if "rel_pos" in name:
            table = weights[name].double()
            resize = naive_window.bilinear_1d_weights(table.shape[0], size.shape[0])
            weights[name] = (resize @ table).to(dtype)
    new.load_state_dict(weights)
    return new.to(dtype).eval()


def reference(stock, x, cluster_after, reconstruct_after, k, clustering, reconstruction):
    """The expedited encoder (docs/method.md §4.3) from stock parts, window by window."""
    K = next(layer.window_size for layer in stock.layers if layer.window_size > 0)
    B = x.shape[0]
    x, hw = stock.patch_embed(x)
    x = x.view(B, *hw, -1)
    pos = _stock.resize_pos_embed(stock.pos_embed.flatten(1, 2), stock.patch_resolution, hw,
                                  mode=stock.interpolate_mode, num_extra_tokens=0)
    x = x + pos.view(1, *hw, -1)
    C = x.shape[-1]

    def cluster(x):
        return naive_window.cluster_per_window(x.reshape(B, -1, C), hw, K, clustering)

    def reconstruct(x, states):
        return naive_window.reconstruct_per_window(x, states, hw, K, reconstruction).view(B, *hw, C)

    outs, states = [], None
    if cluster_after == 0:
        x, states = cluster(x)
    for i, layer in enumerate(stock.layers):
        if states is None:
            x = layer(x)
        elif layer.window_size > 0:
            x = stock_layer(layer, k, None, x.dtype)(x)
        else:
            x = stock_layer(layer, 0, tuple(x.shape[1:3]), x.dtype)(x)
        if i + 1 == reconstruct_after:
            x, states = reconstruct(x, states), None
        if i in stock.out_indices:
            full = x if states is None else reconstruct(x, states)
            outs.append(stock.channel_reduction(full.permute(0, 3, 1, 2)))
        if i + 1 == cluster_after:
            x, states = cluster(x)
    return outs


@pytest.mark.parametrize("package", PACKAGES)
def test_registered_as_subclass_with_stock_keys(package):
    stock, ours = build_pair(package, cluster_after=2, clustered_window_size=4)
    assert isinstance(ours, ViTSAM)
    assert list(ours.state_dict()) == list(stock.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    stock_built = registry(package).build(dict(type="ViTSAM", **TINY))
    assert type(stock_built) is ViTSAM


def test_disabled_is_bit_identical():
    stock, ours = build_pair(out_indices=[1, 5])
    x = torch.randn(2, 3, 208, 176)                  # 13 x 11 tokens: odd, non-square, batch 2
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("cluster_after,reconstruct_after,k,out_indices,shape", [
    (2, None, 4, [5], (2, 3, 208, 176)),    # 13x11 tokens padded to 18x12: 3x2 windows
    (1, 4, 3, [2, 5], (1, 3, 160, 224)),    # an output inside the span, early reconstruction
    (0, None, 5, [5], (1, 3, 96, 96)),      # one window, clustered before the first layer
])
def test_matches_per_window_reference(cluster_after, reconstruct_after, k, out_indices, shape):
    stock, ours = build_pair(dtype=torch.float64, out_indices=out_indices,
                             cluster_after=cluster_after, reconstruct_after=reconstruct_after,
                             clustered_window_size=k, **OPS)
    clustering = TokenClustering((k, k), window=3, temperature=20.0)
    reconstruction = TokenReconstruction(k=6, temperature=20.0, normalize="l2", ties="keep")
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        ref = reference(stock, x, cluster_after, reconstruct_after or 6, k, clustering,
                        reconstruction)
        outs = ours(x)
        plain = stock(x)
    assert len(outs) == len(ref) == len(out_indices)
    for a, b, c in zip(outs, ref, plain):
        assert a.shape == b.shape == c.shape
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(outs[-1], plain[-1], atol=1e-3)     # expediting did something


def test_clustered_global_layers_see_the_clustered_map():
    """The global layers after clustering attend over the whole (Hc, Wc) map of centres:
    counted by the attention maps' sizes (the stock attention forward, hooked)."""
    _, ours = build_pair(cluster_after=1, clustered_window_size=4)
    sizes = []
    hooks = [layer.attn.register_forward_hook(lambda m, i, o: sizes.append(tuple(i[0].shape[:3])))
             for layer in ours.layers]
    with torch.no_grad():
        ours(torch.randn(1, 3, 208, 176))            # 13x11 -> 3x2 windows of 4x4 centres
    for hook in hooks:
        hook.remove()
    # layer 1 windowed at K (3x2 windows of 6x6), layer 3 global on 12x8, the rest k-windows
    assert sizes == [(6, 6, 6), (6, 4, 4), (1, 12, 8), (6, 4, 4), (6, 4, 4), (1, 12, 8)]


def test_release_setting_on_sam_sizes():
    """SAM's real window 14 -> 9 (81 clusters) at SAM's 64x64 tokens and a non-square map,
    batch 2: shapes as the stock encoder's."""
    arch = dict(embed_dims=16, num_layers=4, num_heads=1, feedforward_channels=16,
                global_attn_indexes=[1, 3])
    stock, ours = build_pair(arch=arch, img_size=1024, window_size=14, cluster_after=1,
                             clustered_window_size=9, cluster_window=5, temperature=200.0,
                             reconstruct_k=20)
    for shape in [(2, 3, 1024, 1024), (1, 3, 768, 1024)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = [o.shape for o in stock(x)]
            got = [o.shape for o in ours(x)]
        assert got == expected == [(shape[0], 16, shape[2] // 16, shape[3] // 16)]


def test_unpadded_clustering_runs_the_content_only():
    """cluster_padding=False: a partial window with r x c content tokens gets
    ceil(r k / K) x ceil(c k / K) centres (13x11 tokens, K 6, k 4: rows 4 + 4 + 1, columns
    4 + 4), and the clustered layers pad their windows as the stock ones do."""
    stock, ours = build_pair(cluster_after=2, clustered_window_size=4, cluster_padding=False)
    x = torch.randn(2, 3, 208, 176)
    assert ours.clustered_hw((13, 11)) == (9, 8)
    with torch.no_grad():
        out, plain = ours(x)[0], stock(x)[0]
    assert out.shape == plain.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, plain, atol=1e-3)


def test_gradients_flow_and_weights_untouched():
    _, ours = build_pair(cluster_after=2, clustered_window_size=4)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    x = torch.randn(1, 3, 160, 160)
    with torch.inference_mode():
        ours(x)
    ours(x)[0].square().sum().backward()
    table = ours.layers[3].attn.rel_pos_h                 # a clustered windowed layer
    assert table.shape == (11, 16) and table.grad is not None and table.grad.abs().sum() > 0
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_small_input_falls_back_with_one_warning():
    stock, ours = build_pair(cluster_after=2, clustered_window_size=4)
    x = torch.randn(1, 3, 48, 64)                     # 3x4 tokens: one padded window, 16 > 12
    assert_stock_fallback_once(stock, ours, x)


@pytest.mark.parametrize("kwargs,name", [
    (dict(cluster_after=2, stage=2), "stage"),
    (dict(cluster_after=2, attention_mask_shift="stock"), "attention_mask_shift"),
    (dict(cluster_after=2, cluster_grid=0.5), "cluster_grid"),
    (dict(cluster_after=6), "cluster_after"),
    (dict(cluster_after=2, reconstruct_after=7), "reconstruct_after"),
    (dict(cluster_after=2, clustered_window_size=7), "clustered_window_size"),
    (dict(cluster_after=2, clustered_window_size=0), "clustered_window_size"),
    (dict(cluster_after=2, cluster_window=4), "cluster_window"),
    (dict(cluster_after=2, reconstruct_ties="all"), "reconstruct_ties"),
    (dict(cluster_after=2, reducer=dict(type="EViT")), "reducer"),
    (dict(cluster_after=2, window_size=0), "window_size"),
    (dict(reconstruct_after=3), "reconstruct_after"),
])
def test_bad_arguments_raise_at_build(kwargs, name):
    config = {**TINY, **kwargs}
    with pytest.raises(ValueError, match=name):
        registry("mmseg").build(dict(type="ExpeditedViTSAM", **config))


def test_defaults():
    ours = registry("mmseg").build(dict(type="ExpeditedViTSAM", **{**TINY, "window_size": 14},
                                        cluster_after=2))
    assert (ours.window_size, ours.clustered_window_size) == (14, 10)
    assert ours.reconstruct_after == 6 and ours.clustering.grid == (10, 10)


# --------------------------------------------------------------------------- configs
SAM_CONFIGS = sorted(glob.glob(osp.join(ROOT, "configs", "sam", "*_expedite-*.py")))
# the layer counts and global layers of SAM's ViT-B/L/H, for shrunken stand-ins
SAM_DEPTHS = {"base": (12, [2, 5, 8, 11]), "large": (24, [5, 11, 17, 23]),
              "huge": (32, [7, 15, 23, 31])}


def shrunken(cfg):
    """The config with its ViT-L/H made narrow (same depth, global layers, windows and
    expedite settings), so that a forward takes a moment; ViT-B stays as it is."""
    backbone = cfg.model.backbone
    if backbone.arch != "base":
        depth, global_layers = SAM_DEPTHS[backbone.arch]
        backbone.arch = dict(embed_dims=32, num_layers=depth, num_heads=2,
                             feedforward_channels=64, global_attn_indexes=global_layers)
    return cfg


def test_there_are_sam_configs_for_b_l_h():
    assert [osp.basename(p)[:9] for p in SAM_CONFIGS] == ["sam_vit-b", "sam_vit-h", "sam_vit-l"]


@pytest.mark.parametrize("path", SAM_CONFIGS, ids=osp.basename)
def test_sam_config_runs_a_forward_on_a_small_input(path):
    """The config's model (SAMImageEncoder) on a 224x288 input: 14x18 tokens, two 14x14
    windows after padding, each clustered to the config's 9x9 centres."""
    cfg = shrunken(load_config(path))
    ours = build_model(cfg)
    stock = build_model(disable_expedite(cfg))
    stock.load_state_dict(ours.state_dict())
    assert type(ours.backbone) is ExpeditedViTSAM and ours.backbone.clustered_window_size == 9
    x = torch.randn(1, 3, 224, 288)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        embedding = ours(x, mode="predict")[0].image_embedding
        plain = stock(x, mode="predict")[0].image_embedding
    assert not [w for w in caught if "not fewer tokens" in str(w.message)]
    assert embedding.shape == plain.shape == (256, 14, 18)
    assert torch.isfinite(embedding).all() and not torch.allclose(embedding, plain, atol=1e-3)


def test_sam_config_loads_an_mmpretrain_checkpoint_unmodified(tmp_path):
    """mmpretrain's converted SAM weights are an ImageClassifier's state dict (backbone.*)
    with numpy values in the meta: saved from the stock config's model, they load strictly
    into the expedited config's model, which then computes the stock embedding when
    disabled."""
    from mmengine.runner.checkpoint import load_checkpoint

    from expedite_mm.apis.checkpoint import checkpoint_policy
    expedited = osp.join(ROOT, "configs", "sam", "sam_vit-b_expedite-a6-w9_1024x1024.py")
    stock = build_model(load_config(osp.join(ROOT, "configs", "sam", "sam_vit-b_1024x1024.py")))
    assert type(stock.backbone) is ViTSAM
    assert all(key.startswith("backbone.") for key in stock.state_dict())
    path = str(tmp_path / "vit-base-p16_sam-pre_3rdparty_sa1b-1024px.pth")
    torch.save({"meta": {"mmpretrain_version": "1.0.0rc7", "epoch": np.int64(0)},
                "state_dict": stock.state_dict()}, path)
    model = build_model(disable_expedite(load_config(expedited)))
    with checkpoint_policy(source=path):
        load_checkpoint(model, path, map_location="cpu", strict=True)
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(model(x)[0], stock(x)[0])


@pytest.mark.slow
def test_flops_and_benchmark_tools_run_on_the_sam_config(tmp_path):
    """get_flops.py (whole model = the encoder) and benchmark.py (predict = embeddings) on
    SAM ViT-B at 448x448 (28x28 tokens, 4 windows)."""
    config = osp.join(ROOT, "configs", "sam", "sam_vit-b_expedite-a6-w9_1024x1024.py")
    flops = command_json(tmp_path, "flops", config, "--shape", "448")
    assert flops["shape"] == [448, 448]
    assert flops["ratio_whole"] == pytest.approx(flops["ratio_backbone"])
    # our fvcore measurement: 73.68 -> 52.06 GFLOPs (6 of 12 layers on 18x18 instead of
    # 28x28 tokens: the 4 windows of 14x14 become 9x9 centres each)
    assert flops["ratio_backbone"] == pytest.approx(0.7066, abs=0.005)
    assert flops["expedited"]["clustering_reconstruction_gflops"] > 0
    bench = command_json(tmp_path, "benchmark", config, "--shape", "448", "--repeat", "2",
                         "--warmup", "1", "--no-memory")
    assert len(bench["expedited"]["latencies_ms"]) == len(bench["stock"]["latencies_ms"]) == 2


def test_sam_predictor_tool_puts_our_encoder_into_sam():
    """tools/sam_predictor.py: segment_anything's Sam gets our encoder in place of its own
    (same input size, our embedding out); without the package it says how to get it."""
    from expedite_mm.apis.sam import with_encoder
    cfg = load_config(osp.join(ROOT, "configs", "sam", "sam_vit-b_expedite-a6-w9_1024x1024.py"))
    cfg.model.backbone.arch = dict(embed_dims=32, num_layers=12, num_heads=2,
                                   feedforward_channels=64, global_attn_indexes=[2, 5, 8, 11])
    model = build_model(cfg)

    class StubSam(torch.nn.Module):          # the attributes SamPredictor relies on
        device = torch.device("cpu")

        def __init__(self):
            super().__init__()
            self.image_encoder = torch.nn.Identity()
            self.image_encoder.img_size = 1024

    sam = with_encoder(StubSam(), model)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert sam.image_encoder.img_size == 1024
        assert torch.equal(sam.image_encoder(x), model.backbone(x)[-1])
    if importlib.util.find_spec("segment_anything") is None:
        with pytest.raises(SystemExit, match="pip install segment-anything"):
            run_command("sam-predictor", "c.py", "e.pth", "s.pth", "i.jpg", "--point", "1", "2")
