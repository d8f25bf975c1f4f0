"""No feature changes numbers between the two tested stacks (README, "Two tested stacks"):
a few fixed expedited models -- the ViT logits placement (Segmenter), Swin, SwinV2, SAM's
ViT and DPT's hybrid ViT with its depth head -- with weights and inputs drawn from numpy's
seeded generator (not torch's, whose init functions may change between versions), run in
float64, agree with the values recorded on the pinned stack in
``tests/data/lane_reference.json``: relative L2 over a fixed sample of each output, and
its norm, within 1e-9 (measured: <= 2e-15; what must hold at least is 1e-4).

Record again (on the pinned stack only, e.g. after an intended change of the numbers)::

    PYTHONPATH=. .venv/bin/python tests/e2e/test_lanes.py --record
"""
import importlib
import json
import os
import os.path as osp
import sys
import tempfile

import numpy as np
import pytest
import torch

from harness import ROOT  # noqa: E402
REFERENCE = osp.join(ROOT, "tests", "data", "lane_reference.json")
ADE_A10 = osp.join(ROOT, "configs/segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py")
SAMPLES = 48           # values recorded per output, at fixed positions
TOLERANCE = 1e-9       # relative (measured: <= 2e-15 in float64; the bound asked for is 1e-4)

SEGMENTER = f"""
_base_ = {ADE_A10!r}
model = dict(
    backbone=dict(embed_dims=32, num_layers=4, num_heads=2, cluster_after=2,
                  cluster_grid=(6, 7), drop_path_rate=0.0),
    decode_head=dict(in_channels=32, channels=32, num_heads=2, embed_dims=32, num_layers=1))
"""
# The window backbones with the released rows' reconstruction (L2-normalised weights, ties
# kept): their padded windows hold identical centres, which 'keep' takes all of. (The
# default ties='exact' takes the lowest-index ones on every stack: tests/e2e/test_golden.py.)
RELEASED = dict(reconstruct_normalize="l2", reconstruct_ties="keep")
SWIN = dict(type="ExpeditedSwin", embed_dims=16, depths=(1, 1, 4, 1), num_heads=(1, 1, 2, 2),
            window_size=6, mlp_ratio=2, drop_path_rate=0.0, cluster_after=1,
            clustered_window_size=4, cluster_window=3, **RELEASED)
SWINV2 = dict(type="ExpeditedSwinV2",
              arch=dict(embed_dims=16, depths=[1, 1, 4, 1], num_heads=[1, 1, 2, 2],
                        extra_norm_every_n_blocks=0),
              window_size=[8, 8, 8, 4], pretrained_window_sizes=[6, 6, 6, 3],
              out_indices=(0, 1, 2, 3), pad_small_map=True, drop_path_rate=0.0,
              cluster_after=1, clustered_window_size=6, cluster_window=3, **RELEASED)
SAM = dict(type="ExpeditedViTSAM",
           arch=dict(embed_dims=32, num_layers=6, num_heads=2, feedforward_channels=64,
                     global_attn_indexes=[2, 5]),
           img_size=160, patch_size=16, out_channels=16, window_size=6, cluster_after=2,
           clustered_window_size=4, cluster_window=3, temperature=20.0, reconstruct_k=6,
           reconstruct_normalize="l2", reconstruct_ties="keep")
DPT = dict(
    type="DepthEstimator",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3),
    backbone=dict(type="ExpeditedHybridViT", img_size=64, resnet_depths=(1, 2, 1),
                  resnet_channels=(16, 32, 64), resnet_stem_channels=8, resnet_num_groups=4,
                  embed_dims=32, num_layers=4, num_heads=2, mlp_ratio=2, out_indices=(2, 3),
                  final_norm=False, with_cls_token=True, output_cls_token=True,
                  norm_cfg=dict(type="LN", eps=1e-6), cluster_after=1, cluster_grid=(4, 5)),
    decode_head=dict(type="DPTDepthHead", in_channels=(16, 32, 32, 32), channels=16,
                     post_process_channels=(16, 32, 32, 32),
                     reassemble_factors=(None, None, 1, 0.5), head_channels=8, invert=True,
                     depth_scale=0.01, depth_shift=0.1),
    test_cfg=dict(mode="whole"))

# name: (registry package, model config or None for the Segmenter config, input shape)
CASES = {
    "vit_logits_placement": ("mmseg", None, (1, 3, 160, 144)),
    "swin": ("mmdet", SWIN, (1, 3, 160, 224)),
    # 256 x 256: the expedited stage's 16 x 16 map needs no padding. Padded, its pure-padding
    # centres are not exactly zero (weighted means with vanishing weights on real tokens),
    # and SwinV2's cosine attention divides their ~1e-16 keys by max(|k|, 1e-12): rounding
    # noise that differs between torch builds moves the output by ~3e-5 (docs/install.md).
    "swinv2": ("mmdet", SWINV2, (1, 3, 256, 256)),
    "sam_vit": ("mmseg", SAM, (1, 3, 160, 160)),
    "dpt_hybrid": ("mmseg", DPT, (1, 3, 75, 101)),
}


def _fill(model: torch.nn.Module, seed: int) -> None:
    """Every parameter from numpy's seeded generator: norm scales ~1, biases, position
    tables and tokens small, weights ~N(0, 1/fan_in)."""
    rng = np.random.RandomState(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            z = rng.standard_normal(shape)
            if p.ndim == 1 and name.endswith("weight"):
                value = 1 + 0.1 * z
            elif p.ndim == 1 or any(k in name for k in ("pos_embed", "cls_token", "absolute_pos")):
                value = 0.05 * z
            else:
                value = z / np.sqrt(max(1, int(np.prod(shape[1:]))))
            p.copy_(torch.from_numpy(value))


def _build(name: str) -> torch.nn.Module:
    from mmengine.registry import init_default_scope

    import expedite_mm
    expedite_mm.register_all_modules()
    package, config, _ = CASES[name]
    if config is None:
        from expedite_mm.apis.config import build_model, load_config
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, "segmenter.py")
            with open(path, "w") as f:
                f.write(SEGMENTER)
            model = build_model(load_config(path))
    else:
        init_default_scope(package)
        model = importlib.import_module(f"{package}.registry").MODELS.build(dict(config))
    model = model.double()
    model.eval()
    _fill(model, seed=sorted(CASES).index(name))
    return model


def outputs(name: str):
    """The case's outputs (float64 numpy arrays) on its fixed input."""
    from expedite_mm.apis.config import flatten_outputs
    model = _build(name)
    shape = CASES[name][2]
    x = torch.from_numpy(np.random.RandomState(100 + sorted(CASES).index(name))
                         .uniform(-1, 1, shape))
    with torch.no_grad():
        out = model(x, mode="tensor") if name in ("vit_logits_placement", "dpt_hybrid") \
            else model(x)
    return [o.numpy() for o in flatten_outputs(out)]


def summary(arrays):
    """Per output: its shape, L2 norm and SAMPLES values at fixed positions."""
    rows = []
    for i, a in enumerate(arrays):
        flat = a.reshape(-1)
        index = np.random.RandomState(i).choice(flat.size, min(SAMPLES, flat.size),
                                                replace=False)
        rows.append(dict(shape=list(a.shape), norm=float(np.linalg.norm(flat)),
                         index=index.tolist(), values=flat[index].tolist()))
    return rows


def _relative(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / max(np.linalg.norm(reference), 1e-300))


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_the_pinned_stack(name):
    with open(REFERENCE) as f:
        reference = json.load(f)
    assert sorted(reference["cases"]) == sorted(CASES)
    expected = reference["cases"][name]
    got = summary(outputs(name))
    assert [r["shape"] for r in got] == [r["shape"] for r in expected]
    for ours, theirs in zip(got, expected):
        assert ours["index"] == theirs["index"]
        assert abs(ours["norm"] - theirs["norm"]) <= TOLERANCE * theirs["norm"]
        assert _relative(ours["values"], theirs["values"]) <= TOLERANCE, \
            (name, _relative(ours["values"], theirs["values"]))


def record() -> None:
    pinned = next(line.split("==")[1].strip() for line in open(osp.join(ROOT, "requirements.txt"))
                  if line.startswith("torch=="))
    if torch.__version__.split("+")[0] != pinned:
        sys.exit(f"record on the pinned stack (torch {pinned}), not torch {torch.__version__}")
    cases = {name: summary(outputs(name)) for name in sorted(CASES)}
    os.makedirs(osp.dirname(REFERENCE), exist_ok=True)
    with open(REFERENCE, "w") as f:
        json.dump({"torch": torch.__version__, "dtype": "float64", "cases": cases}, f)
        f.write("\n")
    print(f"wrote {REFERENCE}: {', '.join(cases)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    record()
