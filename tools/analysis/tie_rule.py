"""How many tokens the reconstruction's tie rule touches, on a model and its test images.

``reconstruct_ties='keep'`` keeps, besides a token's k nearest centres, every centre whose
distance is within 8 ulps of the distance products of the k-th (docs/method.md §2); the
released code keeps every centre with ``weight >= kth`` in its own fp32 rounding. The two
agree where the k-th and (k+1)-th distances are exactly equal (identical centres) or far
apart; they can differ only on tokens whose gap is non-zero but inside that band. This
tool counts, over the config's test images (distances re-derived in float64):

* ``band``: tokens whose (k+1)-th distance is within the band of the k-th, not equal in
  float64 -- the only tokens whose reconstruction can differ from the release's;
* ``exact ties``: tokens whose k-th and (k+1)-th distances are equal in float64;
* ``keep != exact-k``: tokens for which ``'keep'`` takes more than k centres (fp32, ours);

and the consequence on the predictions: pixels whose label changes when the model runs
with ``reconstruct_ties='exact'`` instead of ``'keep'``.

    python tools/analysis/tie_rule.py CONFIG CHECKPOINT [--val N] [--cfg-options ...]
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, List

import torch

from expedite_mm.ops.cluster import tie_tolerance
from expedite_mm.utils.config import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="an expedited config (mmseg)")
    parser.add_argument("checkpoint", help="its weights")
    parser.add_argument("--val", type=int, default=None, metavar="N",
                        help="the first N images of the config's test set (default: all)")
    parser.add_argument("--json", metavar="F", help="also write the counts to F")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    args = parser.parse_args(argv)
    if args.val is not None and args.val < 1:
        parser.error("--val must be >= 1")
    return args


def band_counts(tokens: torch.Tensor, centers: torch.Tensor, k: int) -> Dict[str, int]:
    """Tie statistics of one clustering's tokens (B, N, C) against its centres (B, M, C)."""
    offset = tokens.double().mean(1, keepdim=True)          # the reconstruction's centring
    exact = torch.cdist(tokens.double() - offset, centers.double() - offset).pow(2)
    exact = exact.sort(-1).values                              # (B, N, M), float64
    gap = exact[..., k] - exact[..., k - 1]
    offset = tokens.mean(1, keepdim=True)
    z32, s32 = tokens - offset, centers - offset               # ours, fp32
    tolerance = tie_tolerance(z32, s32)                         # (B, N, 1): the operator's band
    band = tolerance.squeeze(-1).double()
    relative = torch.baddbmm(s32.pow(2).sum(-1).unsqueeze(1), z32, s32.transpose(1, 2),
                             alpha=-2)
    kth = relative.sort(-1).values[..., k - 1:k]
    kept = (relative <= kth + tolerance).sum(-1)
    return {"tokens": gap.numel(),
            "band": int(((gap > 0) & (gap <= band)).sum()),
            "exact ties": int((gap == 0).sum()),
            "keep != exact-k": int((kept > k).sum())}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmengine.runner import Runner

    from expedite_mm.ops.cluster import TokenClustering, TokenReconstruction
    from expedite_mm.utils.config import build_model, import_custom_modules, load_config

    cfg = load_config(args.config, args.cfg_options)
    import_custom_modules(cfg)
    model = build_model(cfg, args.checkpoint).eval()
    reconstructions = [m for m in model.modules() if isinstance(m, TokenReconstruction)]
    if not reconstructions or reconstructions[0].neighbours != "global":
        raise SystemExit("tie_rule.py: the config's reconstruction must use global neighbours")
    k = reconstructions[0].k
    totals: Dict[str, int] = {"tokens": 0, "band": 0, "exact ties": 0, "keep != exact-k": 0}

    recording = [True]                  # off while the 'exact' pass runs on the same images

    def record(module, inputs, outputs):
        centers, state = outputs
        if recording[0] and k < state.centers.shape[1]:
            for key, value in band_counts(state.tokens, state.centers, k).items():
                totals[key] += value

    dataset = dict(cfg.test_dataloader.dataset)
    if args.val is not None:
        dataset["indices"] = args.val
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, dataset=dataset,
                                          num_workers=0, persistent_workers=False))
    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, TokenClustering)]
    pixels = changed = 0
    with torch.no_grad():
        for data in loader:
            for m in reconstructions:          # whatever the config says
                m.ties = "keep"
            keep = model.test_step(data)
            recording[0] = False
            for m in reconstructions:
                m.ties = "exact"
            exact = model.test_step(data)
            recording[0] = True
            for a, b in zip(keep, exact):
                a, b = a.pred_sem_seg.data, b.pred_sem_seg.data
                pixels += a.numel()
                changed += int((a != b).sum())
    for hook in hooks:
        hook.remove()
    report: Dict[str, object] = dict(totals, k=k, images=len(loader.dataset), pixels=pixels,
                                     **{"pixels changed by 'exact'": changed})
    tokens = max(totals["tokens"], 1)
    rows: List[str] = [f"{args.config}: {report['images']} images, k={k}, "
                       f"{totals['tokens']} clustered tokens"]
    for key in ("band", "exact ties", "keep != exact-k"):
        rows.append(f"  {key:<16} {totals[key]:>9}  ({100 * totals[key] / tokens:.3f} %)")
    rows.append(f"  pixels whose label changes with reconstruct_ties='exact': {changed} of "
                f"{pixels} ({100 * changed / max(pixels, 1):.4f} %)")
    print("\n".join(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
