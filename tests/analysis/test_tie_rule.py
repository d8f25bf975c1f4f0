"""tools/analysis/tie_rule.py (:mod:`expedite_mm.analysis.tie_rule`): the counts on
constructed tokens whose tie status is known, and one run on the accuracy benchmark (the
shipped checkpoint, 3 val scenes)."""
import os.path as osp

import torch
from harness import ROOT, command_json

from expedite_mm.analysis import tie_rule as tool
from expedite_mm.datasets import digit_scenes_writer as converter


def test_band_counts_on_constructed_distances():
    """Four tokens at the origin (their mean, the offset the tool subtracts, is 0), centres
    on a line: with k = 2 the 2nd and 3rd centres are identical (an exact tie), a few ulps
    apart (inside the band: 8 ulps of max ||s||^2 = 25), or far apart."""
    eps = torch.finfo(torch.float32).eps
    tokens = torch.zeros(1, 4, 2)
    for case, third in [("tie", 1.0), ("band", 1.0 + 2 * eps), ("apart", 2.0)]:
        centres = torch.tensor([[[0.5, 0.0], [1.0, 0.0], [third, 0.0], [5.0, 0.0]]])
        counts = tool.band_counts(tokens, centres, k=2)
        assert counts == {"tokens": 4, "band": 4 * (case == "band"),
                          "exact ties": 4 * (case == "tie"),
                          "keep != exact-k": 4 * (case != "apart")}, (case, counts)


def test_run_on_the_accuracy_benchmark(tmp_path):
    root = tmp_path / "digit_scenes"
    converter.write_dataset(str(root), {"val": 3}, size=128, seed=0, workers=1, progress=False)
    config = osp.join(ROOT, "configs/benchmark/"
                            "segmenter_hybrid-vit-t_expedite-a4-10x10_digitscenes-128x128.py")
    report = command_json(tmp_path, "tie-rule", config,
                          osp.join(ROOT, "checkpoints/segmenter_hybrid-vit-t_"
                                         "digitscenes-128x128.pth"),
                          "--val", "3", "--cfg-options",
                          f"test_dataloader.dataset.data_root={root}")
    assert report["images"] == 3 and report["k"] == 20
    assert report["tokens"] == 3 * 16 * 16 and report["pixels"] == 3 * 128 * 128
    assert 0 <= report["band"] <= report["keep != exact-k"] <= report["tokens"]
