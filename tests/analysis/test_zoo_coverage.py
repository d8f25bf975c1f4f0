"""The zoo-wide check (:mod:`expedite_mm.analysis.zoo_coverage`,
``tools/analysis/zoo_coverage.py``): its fixed sample of shipped configs, walked as
``make test`` does, and the guards of the walk (time limit, memory cap, a config that does
not parse)."""
import csv
import subprocess
import sys

import pytest

from expedite_mm.analysis import zoo_coverage as zoo
from harness import ROOT, command_exit_code


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample walked through the command: (rows from its CSV, its page)."""
    folder = tmp_path_factory.mktemp("zoo")
    assert command_exit_code("zoo-coverage", "--sample", "--csv", folder / "coverage.csv",
                             "--md", folder / "coverage.md") == 0
    return zoo.read_csv(str(folder / "coverage.csv")), (folder / "coverage.md").read_text()


def test_the_sample_passes_where_a_family_covers_it_and_says_why_not_elsewhere(sample):
    rows, _ = sample
    by_config = {r.config.split("/")[0]: r for r in rows}
    by_config["segformer"] = [r for r in rows if "mit-b2" in r.config][0]
    assert [(r.package, r.config) for r in rows] == list(zoo.SAMPLE)
    for name, expedited in [("segmenter", "ExpeditedViT"), ("swin", "ExpeditedSwin"),
                            ("segformer", "ExpeditedMiT"),
                            ("deit", "ExpeditedVisionTransformer")]:
        row = by_config[name]
        assert row.transformer and row.converted and row.passed and not row.reason, row
        assert row.expedited_type == expedited
        assert 0 < row.gflops_ratio < 1
        assert row.gflops_ratio == pytest.approx(row.gflops_expedited / row.gflops_stock,
                                                 abs=1e-3)
    # the default rule: 5 of ViT-T's 12 layers, 3 of Swin-T's third stage of 6, 3 of the
    # 6 blocks of MiT-B2's third stage (5/12 of 6 = 2.5, half up)
    assert by_config["segmenter"].setting == "cluster_after=5"
    assert by_config["segformer"].setting == "cluster_after=3"
    # MiT-B0's third stage has 2 blocks of 160 channels: clustering after the first costs
    # more than the one block it shortens saves, and the row says so
    b0 = [r for r in rows if "mit-b0" in r.config][0]
    assert b0.converted and not b0.passed and b0.setting == "cluster_after=1"
    assert b0.gflops_ratio > 1 and b0.reason == \
        f"GFLOPs ratio {b0.gflops_ratio:.3f} at 512x512 is not below 1"
    assert by_config["segmenter"].input_size == "512x512"
    detector = [r for r in rows if r.package == "mmdet"][0]
    assert detector.passed and detector.setting == "cluster_after=3"
    assert detector.input_size == "800x1333"                     # the config's own size
    levit = by_config["levit"]
    assert levit.transformer and not levit.converted and not levit.passed
    assert levit.reason == "no family expedites LeViT"
    cnn = by_config["fcn"]
    assert (cnn.backbone_type, cnn.transformer, cnn.reason) == \
        ("ResNetV1c", False, "not a transformer backbone")


def test_the_page_counts_and_explains(sample):
    rows, page = sample
    assert "| all | 8 | 7 | 6 | 5 |" in page
    ratios = sorted(r.gflops_ratio for r in rows if r.passed)
    assert (f"over the 5 passing configs: median {ratios[2]:.3f}, from {ratios[0]:.3f} to "
            f"{ratios[-1]:.3f}.") in page
    assert "| mmpretrain | `LeViT` | 1 | 0 | 0 |  |" in page
    b2 = [r for r in rows if "mit-b2" in r.config][0]       # the passing one's ratio only
    assert (f"| mmseg | `MixVisionTransformer` | 2 | 2 | 1 | {b2.gflops_ratio:.3f}-"
            f"{b2.gflops_ratio:.3f} |") in page
    assert ("| mmpretrain | `levit/deploy/levit-128s_8xb256_in1k.py` | `LeViT` | no family "
            "expedites LeViT |") in page
    assert "not a transformer backbone 1" in page and "`PCPVT`" in page


def test_backbones_are_found_where_models_nest_them():
    assert zoo.find_backbone(dict(backbone=dict(type="A"))) == ("backbone", dict(type="A"))
    assert zoo.find_backbone(dict(detector=dict(backbone=dict(type="B"))))[0] == \
        "detector.backbone"
    assert zoo.find_backbone(dict(image_encoder=dict(type="C")))[0] == "image_encoder"
    assert zoo.find_backbone(dict(vision_backbone=dict(type="D")))[0] == "vision_backbone"
    assert zoo.find_backbone(dict(head=dict(type="E"))) == ("", None)
    assert zoo.type_name("mmpretrain.SwinTransformerV2") == "SwinTransformerV2"


def test_every_shipped_config_outside_base_is_listed():
    configs = zoo.shipped_configs("mmseg")
    assert len(configs) > 500 and configs == sorted(configs)
    assert "segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py" in configs
    assert not any("_base_" in c.split("/") for c in configs)


def test_a_config_that_hangs_or_overflows_or_does_not_parse_is_a_row_not_the_end(tmp_path):
    row, cfg = zoo.survey(*zoo.SAMPLE[0])
    slow = zoo.check_in_child(row, cfg, timeout_s=0.05)
    assert not slow.passed and slow.reason == "over the time limit (0.05 s)"
    # ViT-L (300M parameters, three copies built) under a cap of 0.2 GB of new memory: the
    # refused allocation fails the check with the allocator's error as its reason. Walked by
    # the command in a fresh interpreter, as a real walk is: a forked child may reuse the
    # heap its parent freed (a pytest worker's may hold gigabytes), which the cap cannot see
    big = tmp_path / "big.csv"
    subprocess.run([sys.executable, "-m", "expedite_mm.cli", "zoo-coverage", "--configs",
                    "mmseg::segmenter/segmenter_vit-l_mask_8xb1-160k_ade20k-512x512.py",
                    "--memory-gb", "0.2", "--no-flops", "--csv", str(big)],
                   check=True, cwd=ROOT, timeout=300)
    [row] = zoo.read_csv(str(big))
    assert row.transformer and not row.passed and row.seconds < 60, row
    # (named as such where torch's allocator or Python says so; a C extension may fail
    # with a SystemError instead)
    assert row.reason.startswith(("over the memory cap (0.2 GB)", "SystemError")), row
    broken, cfg = zoo.survey("mmseg", "segmenter/no_such_config.py")
    assert cfg is None and broken.reason.startswith("does not parse:")
    # a resumed walk keeps its rows and checks only the rest
    done = [zoo.Row("mmseg", "x.py", reason="kept")]
    rows = zoo.walk([("mmseg", "x.py"), ("mmseg", "fcn/fcn_r50-d8_4xb2-40k_cityscapes-"
                                                  "512x1024.py")],
                    csv_path=str(tmp_path / "c.csv"), done=done)
    assert [r.reason for r in rows] == ["kept", "not a transformer backbone"]
    with open(tmp_path / "c.csv", newline="") as f:
        assert [r["config"] for r in csv.DictReader(f)] == ["x.py", rows[1].config]
