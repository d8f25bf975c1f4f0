"""How many tokens the reconstruction's tie rule touches, on a model and its test images
(``tools/analysis/tie_rule.py``, whose docstring defines the counts).

:func:`band_counts` counts one clustering's tokens whose reconstruction can differ between
``reconstruct_ties='keep'`` and the release's rule; :func:`count_ties` runs a config's
model over its test images with ``'keep'`` and ``'exact'``, sums the counts and the
predicted pixels that change; :func:`format_counts` lays them out.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ..ops.cluster import tie_tolerance


class TieRuleError(ValueError):
    """The config's model cannot be counted (its reconstruction is not the global one)."""


def band_counts(tokens: torch.Tensor, centers: torch.Tensor, k: int) -> Dict[str, int]:
    """Tie statistics of one clustering's tokens (B, N, C) against its centres (B, M, C).

    Args:
        tokens: (B, N, C) the tokens clustered.
        centers: (B, M, C) the centres they are reconstructed from.
        k: the reconstruction's nearest centres.

    Returns:
        ``{'tokens', 'band', 'exact ties', 'keep != exact-k'}`` (counts of tokens).
    """
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


def count_ties(config: str, checkpoint: str, val: Optional[int] = None,
               cfg_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The tie counts over a config's test images, and the predicted pixels whose label
    changes with ``reconstruct_ties='exact'`` instead of ``'keep'``.

    Args:
        config: an expedited mmseg config whose reconstruction uses global neighbours.
        checkpoint: its weights.
        val: the first ``val`` images of the config's test set (None: all).
        cfg_options: config overrides, ``{'dotted.key': value}``.

    Returns:
        :func:`band_counts`' counts summed, with ``k``, ``images``, ``pixels`` and
        ``"pixels changed by 'exact'"``.

    Raises:
        TieRuleError: the reconstruction does not use global neighbours.
    """
    from mmengine.runner import Runner

    from ..apis.config import build_model, import_custom_modules, load_config
    from ..ops.cluster import TokenClustering, TokenReconstruction

    cfg = load_config(config, cfg_options)
    import_custom_modules(cfg)
    model = build_model(cfg, checkpoint).eval()
    reconstructions = [m for m in model.modules() if isinstance(m, TokenReconstruction)]
    if not reconstructions or reconstructions[0].neighbours != "global":
        raise TieRuleError("the config's reconstruction must use global neighbours")
    k = reconstructions[0].k
    totals: Dict[str, int] = {"tokens": 0, "band": 0, "exact ties": 0, "keep != exact-k": 0}

    recording = [True]                  # off while the 'exact' pass runs on the same images

    def record(module, inputs, outputs):
        centers, state = outputs
        if recording[0] and k < state.centers.shape[1]:
            for key, value in band_counts(state.tokens, state.centers, k).items():
                totals[key] += value

    dataset = dict(cfg.test_dataloader.dataset)
    if val is not None:
        dataset["indices"] = val
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
    return dict(totals, k=k, images=len(loader.dataset), pixels=pixels,
                **{"pixels changed by 'exact'": changed})


def format_counts(config: str, report: Dict[str, Any]) -> str:
    """:func:`count_ties`' report as the tool prints it (counts and shares).

    Args:
        config: the config's name (the first line names it).
        report: :func:`count_ties`' report.
    """
    tokens = max(report["tokens"], 1)
    changed, pixels = report["pixels changed by 'exact'"], report["pixels"]
    rows: List[str] = [f"{config}: {report['images']} images, k={report['k']}, "
                       f"{report['tokens']} clustered tokens"]
    for key in ("band", "exact ties", "keep != exact-k"):
        rows.append(f"  {key:<16} {report[key]:>9}  ({100 * report[key] / tokens:.3f} %)")
    rows.append(f"  pixels whose label changes with reconstruct_ties='exact': {changed} of "
                f"{pixels} ({100 * changed / max(pixels, 1):.4f} %)")
    return "\n".join(rows)
