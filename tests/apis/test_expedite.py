"""``expedite-mm expedite``: a stock config in, an expedited config out
(:mod:`expedite_mm.apis.expedite`, ``tools/expedite.py``).

The written configs are read back by mmengine and built; the stock configs are the ones
mmseg and mmdet ship (by their ``pkg::`` names, as a user writes them) and tiny files the
tests write. The tuner's path (``--budget-gflops``) is tested with the tuner's fixtures
in tests/analysis/test_autotune.py."""
import os.path as osp

import pytest
import torch

from expedite_mm.apis.config import build_model, disable_expedite, load_config
from expedite_mm.apis.expedite import default_cluster_after, expedite_config
from harness import command_exit_code

SEGMENTER_T = "mmseg::segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py"
MASK_RCNN_SWIN_T = "mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py"
SEGFORMER_B5 = "mmseg::segformer/segformer_mit-b5_8xb2-160k_ade20k-512x512.py"

TINY_STOCK = """
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                           size=(64, 80)),
    backbone=dict(type='VisionTransformer', img_size=(64, 80), patch_size=8, embed_dims=32,
                  num_layers={layers}, num_heads=2, mlp_ratio=2, out_indices=({last},),
                  final_norm=True, with_cls_token=True),
    decode_head=dict(type='FCNHead', in_channels=32, channels=16, num_convs=1,
                     num_classes=4, loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
"""


def write(path, text):
    path.write_text(text)
    return str(path)


def tiny_stock(tmp_path, layers=6):
    return write(tmp_path / "stock.py", TINY_STOCK.format(layers=layers, last=layers - 1))


@pytest.mark.parametrize("depth, alpha", [(24, 10), (12, 5), (18, 8), (6, 3), (4, 2), (2, 1)])
def test_default_rule_clusters_after_five_twelfths_rounded_half_up(depth, alpha):
    assert default_cluster_after(depth) == alpha


def test_a_shipped_mmseg_config_by_name(tmp_path):
    """Segmenter ViT-T as mmseg ships it: inherited by its name, only the backbone's type
    and cluster_after written (the default rule: 5 of its 12 layers)."""
    result = expedite_config(SEGMENTER_T)
    assert (result.stock_type, result.expedited_type, result.depth) == \
        ("VisionTransformer", "ExpeditedViT", 12)
    assert dict(result.settings) == {"cluster_after": 5}
    lines = [line for line in result.text.splitlines() if not line.startswith("#")]
    assert lines == [f"_base_ = {SEGMENTER_T!r}",
                     "custom_imports = dict(imports=['expedite_mm'], "
                     "allow_failed_imports=False)",
                     "model = dict(backbone=dict(type='ExpeditedViT', cluster_after=5))"]
    path = write(tmp_path / "expedited.py", result.text)
    cfg = load_config(path)
    stock = load_config(write(tmp_path / "stock.py", f"_base_ = {SEGMENTER_T!r}\n"))
    # everything but the backbone's type and cluster_after is the stock config's
    backbone = cfg.model.backbone.to_dict()
    assert (backbone.pop("type"), backbone.pop("cluster_after")) == ("ExpeditedViT", 5)
    assert backbone == {k: v for k, v in stock.model.backbone.items() if k != "type"}
    assert {k: v for k, v in cfg.model.items() if k != "backbone"} == \
        {k: v for k, v in stock.model.items() if k != "backbone"}


def test_written_config_takes_the_stock_weights_and_disabled_is_stock(tmp_path):
    """Built from the written file: the stock model's state-dict keys; with expediting
    disabled the same outputs bit for bit; enabled, the setting asked for."""
    stock_path = tiny_stock(tmp_path)
    result = expedite_config(stock_path, cluster_after=2, size=0.5)
    out = write(tmp_path / "expedited.py", result.text)
    assert f"_base_ = {osp.abspath(stock_path)!r}" in result.text
    cfg = load_config(out)
    assert (cfg.model.backbone.cluster_after, cfg.model.backbone.cluster_grid) == (2, 0.5)
    torch.manual_seed(0)
    stock = build_model(load_config(stock_path)).eval()
    expedited = build_model(cfg).eval()
    assert list(expedited.state_dict()) == list(stock.state_dict())
    expedited.load_state_dict(stock.state_dict())
    disabled = build_model(disable_expedite(cfg)).eval()
    disabled.load_state_dict(stock.state_dict())
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        reference = stock.backbone(x)[0]
        assert torch.equal(disabled.backbone(x)[0], reference)
        clustered = expedited.backbone(x)[0]
        assert clustered.shape == reference.shape and not torch.equal(clustered, reference)


def test_a_shipped_mmdet_swin_config_by_name_with_a_window_size(tmp_path):
    result = expedite_config(MASK_RCNN_SWIN_T, cluster_after=3, size=(5, 5))
    assert (result.expedited_type, result.depth) == ("ExpeditedSwin", 6)   # stage 3 of Swin-T
    assert dict(result.settings) == {"cluster_after": 3, "clustered_window_size": 5}
    cfg = load_config(write(tmp_path / "expedited.py", result.text))
    assert cfg.model.backbone.type == "ExpeditedSwin" and cfg.model._scope_ == "mmdet"
    with pytest.raises(ValueError, match="clustered window side k as one integer"):
        expedite_config(MASK_RCNN_SWIN_T, size=0.5)


def test_a_shipped_segformer_config_expedites_its_deepest_stage(tmp_path):
    """SegFormer MiT-B5 as mmseg ships it: the default rule counts the 40 blocks of its
    third stage (5/12 of 40 -> 17); a grid ratio is MiT's cluster_grid."""
    result = expedite_config(SEGFORMER_B5, size=0.5)
    assert (result.stock_type, result.expedited_type, result.depth) == \
        ("MixVisionTransformer", "ExpeditedMiT", 40)
    assert dict(result.settings) == {"cluster_after": 17, "cluster_grid": 0.5}
    cfg = load_config(write(tmp_path / "expedited.py", result.text))
    assert cfg.model.backbone.type == "ExpeditedMiT" and cfg.model.backbone.num_layers == \
        [3, 6, 40, 3]


@pytest.mark.parametrize("given, message", [
    (dict(cluster_after=6), "cluster_after"),                # the backbone has 6 layers
    (dict(cluster_after=2, size=1.5), "cluster_grid"),      # a ratio above 1
])
def test_a_setting_out_of_range_names_the_parameter(tmp_path, given, message):
    with pytest.raises(ValueError, match=message) as error:
        expedite_config(tiny_stock(tmp_path), **given)
    assert "\n" not in str(error.value)


def test_command_writes_the_file_and_refuses_in_one_line_writing_nothing(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    stock = tiny_stock(tmp_path)
    assert command_exit_code("expedite", stock, "--alpha", "2", "--grid", "4x5") == 0
    written = tmp_path / "stock_expedite.py"              # the default name, here
    backbone = load_config(str(written)).model.backbone
    assert (backbone.type, backbone.cluster_after, backbone.cluster_grid) == \
        ("ExpeditedViT", 2, (4, 5))
    assert "stock_expedite.py: VisionTransformer -> ExpeditedViT" in capsys.readouterr().out
    refusals = {
        "levit": ("mmpretrain::levit/deploy/levit-128s_8xb256_in1k.py", "'LeViT'"),
        "missing": ("mmseg::segmenter/no_such_config.py", "no config"),
        "expedited": (osp.join(osp.dirname(osp.dirname(osp.dirname(__file__))), "configs",
                               "segmenter", "segmenter_vit-b_expedite-a6-24x24_ade20k-"
                               "512x512.py"), "expedited already"),
        "range": (stock, "cluster_after"),
    }
    for name, (config, message) in refusals.items():
        out = tmp_path / f"{name}.py"
        extra = ["--alpha", "9"] if name == "range" else []
        assert command_exit_code("expedite", config, "-o", out, *extra) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("expedite: error:") and message in err and "\n" not in err, err
        assert not out.exists()
    # the tuner's options go together
    assert command_exit_code("expedite", stock, "--budget-gflops", "0.5") == 2
    assert "needs --checkpoint" in capsys.readouterr().err
    assert command_exit_code("expedite", stock, "--budget-gflops", "0.5", "--alpha", "2",
                             "--checkpoint", "x.pth", "--val", "2") == 2
    assert "give one or the other" in capsys.readouterr().err


def test_budget_path_is_the_tuners_run_rebased_on_the_stock_name(tmp_path, monkeypatch):
    """The command's wiring of ``--budget-gflops`` (the tuner itself: test_autotune.py):
    its options reach the tuner and its config is written where ``-o`` says."""
    from expedite_mm.analysis import autotune
    seen = {}

    def fake(config, options):
        seen.update(config=config, options=options)
        return "_base_ = 'x'\n"
    monkeypatch.setattr(autotune, "expedite_for_budget", fake)
    out = tmp_path / "tuned.py"
    assert command_exit_code("expedite", SEGMENTER_T, "--budget-gflops", "0.6",
                             "--checkpoint", "w.pth", "--images", str(tmp_path),
                             "--work-dir", str(tmp_path / "work"), "-o", out) == 0
    options = seen["options"]
    assert seen["config"] == SEGMENTER_T
    assert (options.budget_gflops, options.checkpoint, options.images, options.work_dir) == \
        (0.6, "w.pth", str(tmp_path), str(tmp_path / "work"))
    assert out.read_text() == "_base_ = 'x'\n"


def test_a_backbone_nested_in_the_model_is_found_and_written_there(tmp_path):
    """A distillation/multimodal-style model nests its backbone (model.detector.backbone
    here); the stock config's own custom_imports are kept beside ours."""
    text = TINY_STOCK.format(layers=4, last=3)
    nested = text.replace("    backbone=dict(type='VisionTransformer'",
                          "    detector=dict(backbone=dict(type='VisionTransformer'")
    nested = nested.replace("with_cls_token=True),", "with_cls_token=True)),")
    nested += "custom_imports = dict(imports=['os.path'], allow_failed_imports=False)\n"
    stock = write(tmp_path / "nested.py", nested)
    result = expedite_config(stock)
    assert (result.backbone_path, result.depth, dict(result.settings)) == \
        ("detector.backbone", 4, {"cluster_after": 2})
    assert "model = dict(detector=dict(backbone=dict(type='ExpeditedViT', cluster_after=2)))" \
        in result.text
    cfg = load_config(write(tmp_path / "expedited.py", result.text))
    assert cfg.custom_imports.imports == ["os.path", "expedite_mm"]
    assert cfg.model.detector.backbone.num_layers == 4 and "backbone" not in cfg.model


def test_the_input_shape_is_read_from_the_zoos_test_pipelines():
    """The config's own input size, as the expedite command and the zoo walk take it, from
    the pipelines the zoos write: mmdet's FixScaleResize inside a concatenation of test
    sets, FixShapeResize, a top-level test_pipeline only."""
    from mmengine.config import Config

    from expedite_mm.apis.config import default_input_shape
    fix_scale = dict(type="FixScaleResize", scale=(800, 1333), keep_ratio=True)
    concat = dict(type="ConcatDataset", datasets=[dict(type="A", pipeline=[fix_scale]),
                                                  dict(type="B", pipeline=[])])
    for cfg, shape in [
            (dict(test_dataloader=dict(dataset=concat)), (800, 1333)),
            (dict(test_dataloader=dict(dataset=dict(pipeline=[dict(
                type="mmdet.FixShapeResize", width=1024, height=768)]))), (768, 1024)),
            (dict(test_pipeline=[dict(type="Resize", scale=(1333, 800), keep_ratio=True)]),
             (800, 1333))]:
        assert default_input_shape(Config(dict(cfg, model=dict()))) == shape


def test_mmpretrain_configs_the_zoo_walk_found_wanting(tmp_path):
    """A multimodal model's vision encoder (LLaVA: nested at model.vision_encoder, its
    ``pretrained`` key popped by the wrapper, ``out_type='raw'``: every patch token) gets
    ``reconstruct=True`` and builds; mmpretrain's own SwinV2 resolves in mmpretrain."""
    result = expedite_config("mmpretrain::llava/llava-7b-v1.5_caption.py")
    assert result.backbone_path == "vision_encoder" and result.depth == 24
    assert dict(result.settings) == {"cluster_after": 10, "reconstruct": True}
    result = expedite_config("mmpretrain::swin_transformer_v2/swinv2-tiny-w8_16xb64_in1k-"
                             "256px.py")
    assert (result.expedited_type, result.depth) == ("ExpeditedSwinV2", 6)
    cfg = load_config(write(tmp_path / "swinv2.py", result.text))
    assert cfg.model.backbone.type == "ExpeditedSwinV2" and cfg.model._scope_ == "mmpretrain"
