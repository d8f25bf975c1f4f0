"""tools/model_converters/dpt2mmseg.py (:mod:`expedite_mm.converters.dpt`): an
official-format DPT hybrid checkpoint converts, loads strictly, and our model then
computes what the release architecture computes.

The release architecture is tests/helpers/naive_dpt.py (written from the DPT paper, with the
release's module names), small; the checkpoint is its state dict saved as DPT does.
"""

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS

import expedite_mm

expedite_mm.register_all_modules()
from harness import run_command
from naive_dpt import ReleaseDPTHybrid, randomize_

RELEASE = dict(depths=(1, 2, 1), stage_channels=(16, 32, 64), stem=8, groups=4, embed=32,
               num_layers=4, heads=2, mlp=4, pos_grid=4, vit_taps=(2, 3), features=16,
               head_channels=8, scale=0.01, shift=0.1)
BACKBONE = dict(resnet_depths=(1, 2, 1), resnet_channels=(16, 32, 64), resnet_stem_channels=8,
                resnet_num_groups=4, img_size=64, embed_dims=32, num_layers=4, num_heads=2,
                mlp_ratio=4, out_indices=(2, 3), final_norm=False, with_cls_token=True,
                output_cls_token=True, norm_cfg=dict(type="LN", eps=1e-6),
                interpolate_mode="bilinear")
HEAD = dict(type="DPTDepthHead", in_channels=(16, 32, 32, 32), channels=16,
            post_process_channels=(16, 32, 32, 32), reassemble_factors=(None, None, 1, 0.5),
            readout_type="project", head_channels=8, non_negative=True, invert=True,
            depth_scale=0.01, depth_shift=0.1)
UNUSED = {"pretrained.model.norm.weight", "pretrained.model.norm.bias",
          "pretrained.model.head.weight", "pretrained.model.head.bias"} | {
    f"scratch.refinenet4.resConfUnit1.conv{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}


def converter():
    from expedite_mm.converters import dpt
    return dpt


def release_model():
    release = randomize_(ReleaseDPTHybrid(**RELEASE))
    with torch.no_grad():            # keep the output off ReLU's floor: a non-trivial depth map
        release.scratch.output_conv[4].bias.fill_(5.0)
    return release.eval()


def our_model(backbone_type="HybridViT", **expedite):
    init_default_scope("mmseg")
    model = MODELS.build(dict(
        type="DepthEstimator",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3),
        backbone=dict(type=backbone_type, **BACKBONE, **expedite), decode_head=HEAD,
        test_cfg=ConfigDict(mode="whole")))
    model.eval()
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(release model, path of the converted checkpoint, converter meta)."""
    tmp = tmp_path_factory.mktemp("dpt")
    release = release_model()
    src, dst = tmp / "dpt_hybrid_tiny-release.pt", tmp / "dpt_hybrid_tiny-mmseg.pth"
    torch.save(release.state_dict(), src)       # the release files are bare state dicts
    run_command("convert-dpt", src, dst)
    meta = torch.load(dst, map_location="cpu", weights_only=True)["meta"]
    return release, str(dst), meta


# 6 x 10, 4 x 14 tokens; and 2 x 8: as many tokens as the 4 x 4 position grid, in another
# shape (resized all the same, as DPT does).
@pytest.mark.parametrize("shape", [(2, 3, 96, 160), (1, 3, 64, 224), (1, 3, 32, 128)])
def test_converted_checkpoint_loads_strictly_and_matches_the_release(converted, shape):
    release, path, meta = converted
    model = our_model()
    load_checkpoint(model, path, map_location="cpu", strict=True)   # raises on any mismatch
    assert set(meta["dropped"]) == UNUSED
    model.double()
    release = release.double()
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = model._forward(x), release(x)
    assert ours.shape == (shape[0], 1, *shape[2:])
    assert theirs.std() > 0.01 * theirs.mean()          # a real depth map, not a constant
    torch.testing.assert_close(ours[:, 0], theirs, rtol=1e-9, atol=1e-9)


def test_expedited_model_takes_the_same_checkpoint(converted):
    release, path, _ = converted
    stock = our_model()
    load_checkpoint(stock, path, map_location="cpu", strict=True)
    disabled = our_model("ExpeditedHybridViT")
    load_checkpoint(disabled, path, map_location="cpu", strict=True)
    expedited = our_model("ExpeditedHybridViT", cluster_after=1, cluster_grid=(4, 7),
                          temperature=1.0, reconstruct_normalize="l2")
    load_checkpoint(expedited, path, map_location="cpu", strict=True)
    x = torch.randn(1, 3, 96, 160)                        # 6 x 10 tokens -> 4 x 7 centres
    with torch.no_grad():
        reference = stock._forward(x)
        assert torch.equal(disabled._forward(x), reference)
        fast = expedited._forward(x)
    assert fast.shape == reference.shape and not torch.allclose(fast, reference)


def test_release_with_optimizer_state_converts_the_same(converted, tmp_path):
    release, path, _ = converted
    module = converter()
    wrapped = {"model": release.float().state_dict(), "optimizer": {"state": {}, "lr": 1e-5}}
    plain, _ = module.convert_dpt_hybrid(module.extract_state_dict(release.state_dict()))
    nested, _ = module.convert_dpt_hybrid(module.extract_state_dict(wrapped))
    assert list(plain) == list(nested)
    assert all(torch.equal(plain[k], nested[k]) for k in plain)


def test_rejects_what_it_does_not_know():
    module = converter()
    state = release_model().state_dict()
    with pytest.raises(module.DPTConversionError, match="hybrid"):
        module.convert_dpt_hybrid({k: v for k, v in state.items()
                                   if "patch_embed.backbone" not in k})
    with pytest.raises(module.DPTConversionError, match="act_postprocess1"):
        module.convert_dpt_hybrid({**state, "pretrained.act_postprocess1.3.weight": torch.zeros(1)})
    with pytest.raises(module.DPTConversionError, match="official DPT"):
        module.extract_state_dict({"state_dict": {"backbone.x": torch.zeros(1)}})
