"""ExpeditedSwin against mmdet's and mmseg's SwinTransformer (docs/method.md §4.2)."""
import pytest
import torch

import expedite_mm

expedite_mm.register_all_modules()  # registers ExpeditedSwin in both registries
from expedite_mm.ops import TokenClustering, TokenReconstruction
from harness import assert_stock_fallback_once
from swin_reference import TINY, build_pair, reference, registry, stock_swin, window_k_block

PACKAGES = ["mmdet", "mmseg"]


def run_clustered(ours, block, x, hw):
    """One block of the expedited stage as the clustered span runs it (window k, shift k//2)."""
    k = ours.clustered_window_size
    shift = k // 2 if block.attn.shift_size > 0 else 0
    return ours.stages[ours.expedited_stage].clustered_block(block, x, hw, k, shift, shift)


@pytest.mark.parametrize("package", PACKAGES)
def test_registered_in_both_registries_as_subclass(package):
    _, ours = build_pair(package, cluster_after=2)
    assert isinstance(ours, stock_swin(package))


@pytest.mark.parametrize("package", PACKAGES)
def test_disabled_is_bit_identical(package):
    stock, ours = build_pair(package, out_indices=(0, 1, 2, 3))
    x = torch.randn(2, 3, 117, 150)
    with torch.no_grad():
        for a, b in zip(stock(x), ours(x), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("package", PACKAGES)
def test_state_dict_keys_equal_stock(package):
    stock, ours = build_pair(package, cluster_after=2, clustered_window_size=4)
    assert list(ours.state_dict()) == list(stock.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_expedited_stage_is_built_from_the_stock_stage_and_holds_its_modules(package):
    """The expedited stage replaces the stock one at build time, an ordinary instance of a
    subclass of the stock stage class holding the stock stage's own blocks; its class's
    constructor takes nothing but a stage of that stock class."""
    torch.manual_seed(0)
    stock = registry(package).build(dict(type="SwinTransformer", **TINY))
    torch.manual_seed(0)
    ours = registry(package).build(dict(type="ExpeditedSwin", **TINY, cluster_after=2))
    stage = ours.stages[ours.expedited_stage]
    stock_stage_class = type(stock.stages[0])
    assert isinstance(stage, stock_stage_class) and type(stage) is not stock_stage_class
    assert all(type(s) is stock_stage_class for i, s in enumerate(ours.stages)
               if i != ours.expedited_stage)
    assert [type(b) for b in stage.blocks] == [type(b) for b in stock.stages[2].blocks]
    assert stage.plan.cluster_after == 2 and stage.training == ours.training
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in stock.parameters())
    fresh = type(stage)(stock.stages[1], stage.plan)          # adopts, builds nothing
    assert fresh.blocks is stock.stages[1].blocks and fresh.downsample is stock.stages[1].downsample
    with pytest.raises(TypeError, match="expedites stages of class"):
        type(stage)(stock.stages[1].blocks, stage.plan)


@pytest.mark.parametrize("package", PACKAGES)
@pytest.mark.parametrize("stage,cluster_after,reconstruct_after,k,shape", [
    (2, 2, None, 4, (2, 3, 200, 264)),   # stage-3 map 13x17: padded to 18x18, 3x3 windows
    (2, 3, 5, 4, (1, 3, 192, 192)),      # odd alpha (next block shifted), early reconstruction
    (2, 0, 6, 3, (1, 3, 130, 250)),      # cluster before the first block, odd k
    (1, 1, 2, 4, (1, 3, 100, 140)),      # another stage
])
def test_matches_spec_reference(package, stage, cluster_after, reconstruct_after, k, shape):
    stock, ours = build_pair(package, torch.float64, stage=stage, cluster_after=cluster_after,
                             reconstruct_after=reconstruct_after, clustered_window_size=k,
                             cluster_window=3, temperature=20.0, reconstruct_k=6,
                             reconstruct_normalize="l2")
    depth = TINY["depths"][stage]
    clustering = TokenClustering((k, k), window=3, temperature=20.0)
    reconstruction = TokenReconstruction(k=6, temperature=20.0, normalize="l2")
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        ref = reference(package, stock, x, stage, cluster_after, reconstruct_after or depth, k,
                        clustering, reconstruction)
        outs = ours(x)
        plain = stock(x)
    assert len(outs) == len(ref) == 4
    for a, b in zip(outs, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outs[3], plain[3], atol=1e-3)        # expediting did something


@pytest.mark.parametrize("package", PACKAGES)
def test_content_only_clustering_matches_reference(package):
    """``cluster_padding=False``: no centre of pure padding; the clustered blocks (stock
    window-k blocks in the reference) pad their attention windows themselves."""
    stock, ours = build_pair(package, torch.float64, cluster_after=2, clustered_window_size=4,
                             cluster_window=3, cluster_padding=False)
    x = torch.randn(2, 3, 200, 264, dtype=torch.float64)       # stage-3 map 13x17
    with torch.no_grad():
        ref = reference(package, stock, x, 2, 2, 6, 4, TokenClustering((4, 4), window=3),
                        TokenReconstruction(k=10), cluster_padding=False)
        outs = ours(x)
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # rows: 2 whole windows (4 + 4 centres) + 1 content row (1); columns: 4 + 4 + 5 of 6 (4)
    assert ours.stages[2].plan.clustered_hw((13, 17)) == (9, 12)


@pytest.mark.parametrize("package", PACKAGES)
def test_window_k_equal_K_runs_the_stock_block(package):
    """k = K: the clustered blocks use the loaded table and index as they are."""
    _, ours = build_pair(package, cluster_after=2, clustered_window_size=6)
    x = torch.randn(2, 12 * 18, 64)
    with torch.no_grad():
        for index, block in enumerate(ours.stages[2].blocks):
            assert torch.equal(run_clustered(ours, block, x, (12, 18)),
                               block(x, (12, 18)))


@pytest.mark.parametrize("package", PACKAGES)
def test_clustered_block_uses_bilinearly_resized_table(package):
    _, ours = build_pair(package, cluster_after=2, clustered_window_size=4)
    x = torch.randn(2, 8 * 12, 64)
    with torch.no_grad():
        for index in (2, 3):                                      # one plain, one shifted
            block = ours.stages[2].blocks[index]
            expected = window_k_block(package, block, 4)(x, (8, 12))
            got = run_clustered(ours, block, x, (8, 12))
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("package", PACKAGES)
def test_parameters_and_state_dict_untouched_by_forward(package):
    _, ours = build_pair(package, cluster_after=1, clustered_window_size=4)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    params_before = dict(ours.named_parameters())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours(x)
    ours(x)[3].square().sum().backward()                          # autograd path too
    after = ours.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    params_after = dict(ours.named_parameters())
    assert params_after.keys() == params_before.keys()
    assert all(params_after[n] is params_before[n] for n in params_before)
    table = ours.stages[2].blocks[3].attn.w_msa.relative_position_bias_table
    assert table.shape == (11 * 11, 2) and table.grad is not None and table.grad.abs().sum() > 0


@pytest.mark.parametrize("package", PACKAGES)
def test_resized_tables_follow_new_weights(package):
    """The window-k tables are derived from the parameters on every call: new weights,
    loaded in place or written through ``.data`` (as EMA hooks do), take effect at once."""
    stock, ours = build_pair(package, torch.float64, cluster_after=2, clustered_window_size=4,
                             cluster_window=3)
    x = torch.randn(1, 3, 160, 224, dtype=torch.float64)
    other = stock_swin(package)(**TINY).double()
    other.eval()
    with torch.no_grad():
        ours(x)
        for mine, theirs in zip(ours.parameters(), other.parameters()):
            mine.data = theirs.data.clone()          # a write that bumps no version counter
        new = ours(x)
        ref = reference(package, other, x, 2, 2, 6, 4, TokenClustering((4, 4), window=3),
                        TokenReconstruction(k=10))
    for a, b in zip(new, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_shapes_equal_stock_for_detection_and_segmentation_sizes():
    """All four outputs, batch 2, with the real window 12 -> 8 on a tiny Swin (mmdet's; the
    mmseg class runs the same mixin, compared with its stock in the tests above)."""
    tiny_w12 = dict(embed_dims=8, depths=(1, 1, 3, 1), num_heads=(1, 1, 2, 2), window_size=12,
                    mlp_ratio=1, drop_path_rate=0.0)
    stock = stock_swin("mmdet")(**tiny_w12)
    ours = registry("mmdet").build(dict(type="ExpeditedSwin", **tiny_w12, cluster_after=1,
                                        clustered_window_size=8, cluster_window=7))
    stock.eval()
    ours.eval()
    for shape in [(2, 3, 1024, 1024), (2, 3, 800, 1333), (2, 3, 640, 640)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = [o.shape for o in stock(x)]
            got = [o.shape for o in ours(x)]
        assert got == expected, shape
        assert len(got) == 4 and got[2][2:] == (-(-shape[2] // 16), -(-shape[3] // 16))


def test_checkpointed_blocks_give_the_same_gradients():
    """with_cp=True recomputes the window-k blocks in backward with the same window."""
    _, plain = build_pair("mmdet", cluster_after=2, clustered_window_size=4)
    cp = registry("mmdet").build(dict(type="ExpeditedSwin", **TINY, with_cp=True,
                                      cluster_after=2, clustered_window_size=4))
    cp.load_state_dict(plain.state_dict())
    cp.eval()
    x = torch.randn(1, 3, 96, 112)
    grads = []
    for model in (plain, cp):
        model.zero_grad()
        inputs = x.clone().requires_grad_(True)
        sum(o.square().sum() for o in model(inputs)).backward()
        grads.append((inputs.grad, model.stages[2].blocks[4].attn.w_msa.qkv.weight.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("package", PACKAGES)
def test_small_input_falls_back_with_one_warning(package):
    stock, ours = build_pair(package, cluster_after=2, clustered_window_size=4)
    x = torch.randn(1, 3, 48, 64)                                # stage-3 map 3x4 < 4x4
    assert_stock_fallback_once(stock, ours, x)


@pytest.mark.parametrize("kwargs,name", [
    (dict(cluster_after=2, stage=4), "stage"), (dict(cluster_after=2, stage=-1), "stage"),
    (dict(cluster_after=2, stage=1.0), "stage"),
    (dict(cluster_after=6), "cluster_after"), (dict(cluster_after=-1), "cluster_after"),
    (dict(stage=0, cluster_after=2), "cluster_after"),
    (dict(cluster_after=2, reconstruct_after=2), "reconstruct_after"),
    (dict(cluster_after=2, reconstruct_after=7), "reconstruct_after"),
    (dict(reconstruct_after=4), "reconstruct_after"),
    (dict(cluster_after=2, clustered_window_size=7), "clustered_window_size"),
    (dict(cluster_after=2, clustered_window_size=0), "clustered_window_size"),
    (dict(cluster_after=2, clustered_window_size=4.0), "clustered_window_size"),
    (dict(cluster_after=2, cluster_window=4), "cluster_window"),
    (dict(cluster_after=2, cluster_iters=0), "cluster_iters"),
    (dict(cluster_after=2, temperature=-1.0), "temperature"),
    (dict(cluster_after=2, reconstruct_k=0), "reconstruct_k"),
    (dict(cluster_after=2, reconstruct_normalize="max"), "reconstruct_normalize"),
])
def test_bad_arguments_raise_at_build(kwargs, name):
    for package in PACKAGES:
        with pytest.raises(ValueError, match=name):
            registry(package).build(dict(type="ExpeditedSwin", **TINY, **kwargs))


def test_defaults():
    ours = registry("mmdet").build(dict(type="ExpeditedSwin", **{**TINY, "window_size": 12},
                                        cluster_after=2))
    assert (ours.expedited_stage, ours.window_size, ours.clustered_window_size) == (2, 12, 8)
    assert ours.reconstruct_after == 6 and ours.reconstruction.k == 10
    assert ours.clustering.grid == (8, 8)


# Mask2Former's Swin-L; alpha counts all blocks (2 + 2 before stage 3): alpha10 = 6, alpha12 = 8
SWIN_L = dict(pretrain_img_size=384, embed_dims=192, depths=[2, 2, 18, 2],
              num_heads=[6, 12, 24, 48], window_size=12, drop_path_rate=0.0)
RELEASED_OPS = dict(clustered_window_size=8, cluster_window=7, temperature=20.0,
                    reconstruct_k=10, reconstruct_normalize="l2")
PUBLISHED_RATIOS = {6: 663 / 937, 8: 705 / 937}   # backbone GFLOPs, COCO locations 10 / 12
# (both counted with the panoptic yaml's operators: lambda and k change the count by < 0.001)
# ours (fvcore, 1152x1152, measured): 936.9 -> 682.3 / 725.0 GFLOPs (the instance
# config's own operators, get_flops.py: 725.2, metafile.yml); the gap of about
# 0.02 to the published ratios is discussed in checkpoints.md (Mask2Former)
MEASURED_RATIOS = {6: 0.7283, 8: 0.7738}


@pytest.mark.slow
def test_swin_l_backbone_gflops_ratios_match_published():
    """fvcore, backbone only, stock and both COCO settings in one run.

    The released table was counted with fvcore on a 1152x1152 input (the release's FLOP
    script); fvcore gives 936.9 GFLOPs for the stock backbone there, the table says 937.
    (At 1024x1024 the 64x64 stage-3 map is padded to 72x72 before clustering, so the
    saving is smaller: see checkpoints.md.)"""
    from expedite_mm.analysis.flops import count_flops
    x = torch.randn(1, 3, 1152, 1152)
    gflops, expedite_ops = {}, {}
    for alpha in (None, 6, 8):
        settings = {} if alpha is None else dict(cluster_after=alpha, **RELEASED_OPS)
        model = registry("mmdet").build(dict(type="ExpeditedSwin", **SWIN_L, **settings))
        model.eval()
        report = count_flops(model, (x,))
        gflops[alpha] = report.total / 1e9
        expedite_ops[alpha] = (report.module("clustering") + report.module("reconstruction")) / 1e9
        assert "aten::embedding_bag" not in report.unsupported
        del model, report
    assert gflops[None] == pytest.approx(937, abs=1.0)
    for alpha, published in PUBLISHED_RATIOS.items():
        ratio = gflops[alpha] / gflops[None]
        print(f"alpha {alpha}: ratio {ratio:.4f}, published {published:.4f}, "
              f"gap {ratio - published:+.4f}")
        assert ratio == pytest.approx(MEASURED_RATIOS[alpha], abs=0.002), (alpha, gflops)
        assert expedite_ops[alpha] > 1.0            # the operators are counted, not skipped
