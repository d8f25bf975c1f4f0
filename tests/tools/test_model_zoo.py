"""metafile.yml is the one source of the model zoo: the shipped docs are what
tools/analysis/model_zoo.py (:mod:`expedite_mm.analysis.model_zoo`) writes from it, it
covers every config, config names follow the one ``aN`` rule, and its FLOP ratios are what
fvcore measures now.

The FLOP test recomputes a sample (one cheap model of several families) by default; set
``EXPEDITE_ZOO_FLOPS=all`` to recompute every model of the metafile (tens of minutes on a
CPU: ViT-H, Swin-L at 1152x1152).
"""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from expedite_mm.analysis import model_zoo as zoo
from harness import ROOT

META = zoo.load_metafile(osp.join(ROOT, "metafile.yml"))
MODELS = {m["Name"]: m for m in META["Models"]}
# old names kept for one release as one-line aliases of the renamed configs (CHANGELOG)
DEPRECATED_ALIASES = {
    "htc++/htc++_swinv2-l_expedite-a8-w23_coco.py": "htc++_swinv2-l_expedite-a12-w23_coco.py",
    "mask_rcnn/mask-rcnn_swinv2-b-w16_expedite-a8-w12_fpn_ms-crop-3x_coco.py":
        "mask-rcnn_swinv2-b-w16_expedite-a12-w12_fpn_ms-crop-3x_coco.py",
    "segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py":
        "segmenter_vit-b_mask-release-slide_ade20k-512x512.py",
    "segmenter/segmenter_vit-l_mask_8xb1-160k_ade20k-640x640.py":
        "segmenter_vit-l_mask-release-slide_ade20k-640x640.py",
}
# the accuracy benchmark's own configs are documented in docs/benchmark.md
OUTSIDE_THE_ZOO = ("benchmark",)
FLOP_SAMPLE = (
    "segmenter_vit-b_expedite-a6-24x24_ade20k-512x512",          # whole + backbone ratio
    "upernet_deit-s16-mln_expedite-a6-20x20_ade20k-512x512",     # UPerNet, four taps
    "mask2former_swin-l_expedite-a14-w8_ade20k-panoptic",        # windows, backbone, x9
)
DRIFT = 0.002


def test_shipped_docs_are_what_the_tool_writes(capsys):
    """README's results table and docs/model_zoo.md differ from the metafile => fail
    (rerun ``python tools/analysis/model_zoo.py``)."""
    done = subprocess.run([sys.executable, osp.join(ROOT, "tools/analysis/model_zoo.py"),
                           "--check"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "up to date", \
        done.stdout + done.stderr                     # the tool finds no file stale
    assert zoo.update(ROOT, check=True) == []
    files = zoo.generate(META, ROOT)
    assert files["README.md"].count(zoo.BEGIN) == 1
    for model in META["Models"]:                      # every config is in the zoo page
        assert f"({'../' + model['Config']})" in files["docs/model_zoo.md"], model["Name"]


def test_check_reports_a_stale_doc(tmp_path, monkeypatch):
    """``--check`` notices an edit of a generated number (and writes nothing)."""
    edited = dict(META, Models=[dict(m) for m in META["Models"]])
    headline = next(m for m in edited["Models"] if m["Metadata"].get("Headline"))
    headline["Metadata"] = dict(headline["Metadata"],
                                **{"FLOPs Ratio": headline["Metadata"]["FLOPs Ratio"] + 0.1})
    import yaml
    path = tmp_path / "metafile.yml"
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    before = open(osp.join(ROOT, zoo.MODEL_ZOO)).read()
    assert zoo.update(ROOT, str(path), check=True) == [zoo.MODEL_ZOO, "README.md"]
    done = subprocess.run([sys.executable, osp.join(ROOT, "tools/analysis/model_zoo.py"),
                           "--check", "--metafile", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr      # the tool's exit status
    assert done.stdout.startswith(f"{zoo.MODEL_ZOO}, README.md differ from metafile.yml")
    assert open(osp.join(ROOT, zoo.MODEL_ZOO)).read() == before


def test_every_config_is_in_the_metafile_or_an_alias():
    listed = set()
    for model in META["Models"]:
        assert model["Name"] == osp.basename(model["Config"])[:-3]
        for path in (model["Config"], model["Metadata"]["Stock Config"]):
            if "::" not in path:
                assert osp.exists(osp.join(ROOT, path)), path
                listed.add(osp.relpath(path, "configs"))
    configs = {osp.relpath(p, osp.join(ROOT, "configs"))
               for p in glob.glob(osp.join(ROOT, "configs", "**", "*.py"), recursive=True)}
    configs = {c for c in configs if c.split(osp.sep)[0] not in ("_base_",) + OUTSIDE_THE_ZOO}
    assert configs - listed == set(DEPRECATED_ALIASES)
    for alias, target in DEPRECATED_ALIASES.items():      # one line of code: _base_ only
        code = [line for line in open(osp.join(ROOT, "configs", alias))
                if line.strip() and not line.startswith("#")]
        assert code == [f"_base_ = './{target}'\n"], alias


def _blocks_before_clustering(path: str) -> int:
    """N of the one aN rule, from the config: the transformer blocks of the whole backbone
    that run before clustering (Swin / SwinV2 / MiT / PVT / Twins: the stages before
    ``stage`` + ``cluster_after``)."""
    backbone = Config.fromfile(path).model.backbone
    stacks = backbone.get("num_layers")                # MiT, PVT: blocks per stage
    if isinstance(stacks, (list, tuple)) or backbone.type in ("ExpeditedPCPVT", "ExpeditedSVT"):
        stacks = stacks if isinstance(stacks, (list, tuple)) else backbone.depths   # Twins
        return sum(stacks[:backbone.get("stage", 2)]) + backbone.cluster_after
    if "Swin" not in backbone.type:
        return backbone.cluster_after
    depths = backbone.get("depths")
    if depths is None:                                 # mmpretrain's SwinV2: arch name
        import expedite_mm
        expedite_mm.register_all_modules()
        from mmdet.registry import MODELS as REGISTRY
        depths = REGISTRY.get(backbone.type).arch_zoo[backbone.arch]["depths"]
    return sum(depths[:backbone.get("stage", 2)]) + backbone.cluster_after


@pytest.mark.parametrize("name", sorted(n for n, m in MODELS.items() if m["Metadata"].get("Alpha")))
def test_names_follow_the_one_alpha_rule(name):
    model = MODELS[name]
    alpha = model["Metadata"]["Alpha"]
    assert f"_expedite-a{alpha}-" in name
    assert _blocks_before_clustering(osp.join(ROOT, model["Config"])) == alpha


def _flop_cases():
    if os.environ.get("EXPEDITE_ZOO_FLOPS") == "all":
        return sorted(n for n, m in MODELS.items() if "FLOPs Count" in m["Metadata"])
    return list(FLOP_SAMPLE)


@pytest.mark.slow
@pytest.mark.parametrize("name", _flop_cases())
def test_flop_ratios_are_what_fvcore_measures(name):
    """Every number of Metadata (FLOPs, stock FLOPs, ratios), recomputed as its command
    does; a ratio that drifts by more than 0.002 fails."""
    import expedite_mm
    expedite_mm.register_all_modules()
    from expedite_mm.analysis.flops import config_flops
    meta = MODELS[name]["Metadata"]
    count = meta["FLOPs Count"]
    backbone_only = count["Scope"] == "backbone"
    result = config_flops(osp.join(ROOT, MODELS[name]["Config"]), tuple(count["Input"]),
                          backbone_only=backbone_only)
    scope = "backbone" if backbone_only else "whole"
    stock = getattr(result["stock"], scope) * count.get("Scale", 1)
    ours = getattr(result["expedited"], scope) * count.get("Scale", 1)
    print(f"{name}: {stock / 1e9:.2f} -> {ours / 1e9:.2f} GFLOPs, ratio {ours / stock:.4f}")
    assert ours / stock == pytest.approx(meta["FLOPs Ratio"], abs=DRIFT)
    assert stock == pytest.approx(meta["Stock FLOPs"], abs=0.051e9)     # printed to 0.1
    if "FLOPs" in meta:
        assert ours == pytest.approx(meta["FLOPs"], abs=0.051e9)
    if "Backbone FLOPs Ratio" in meta:
        ratio = result["expedited"].backbone / result["stock"].backbone
        assert ratio == pytest.approx(meta["Backbone FLOPs Ratio"], abs=DRIFT)


def test_relative_links_in_the_docs_resolve():
    import re
    pages = ["README.md", "checkpoints.md", "CHANGELOG.md",
             *sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, "docs", "*.md")))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", open(osp.join(ROOT, page)).read()):
            if re.match(r"(https?:|mailto:|#)", target):
                continue
            path = osp.normpath(osp.join(osp.dirname(page), target.split("#")[0]))
            if not osp.exists(osp.join(ROOT, path)):
                broken.append((page, target))
    assert not broken


def test_checkpoints_md_repeats_the_metafile_ratios():
    """Where a table row of checkpoints.md names a config (its file name, or ``..._`` and
    the tail after the model name), it carries the metafile's FLOP ratio."""
    rows = [line for line in open(osp.join(ROOT, "checkpoints.md")).read().split("\n")
            if line.startswith("|")]
    checked = 0
    for name, model in MODELS.items():
        ratio = model["Metadata"].get("FLOPs Ratio")
        keys = (name + ".py", "`..._" + name.split("_", 2)[-1] + "`")
        mine = [row for row in rows if any(key in row for key in keys)]
        if ratio is None or not mine:
            continue
        checked += 1
        assert any(f"{ratio:.3f}" in row for row in mine), (name, ratio, mine)
    assert checked >= 40
