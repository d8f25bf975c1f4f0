"""What the autotuner writes and prints (``tools/analysis/autotune.py``, docs/autotune.md,
"What you get").

The written config (:func:`written_config`, :func:`render_config`: ``_base_`` = the user's
config plus only what the chosen setting changes, read back by :func:`check_rendered`),
the rows of ``autotune.csv`` (:func:`candidate_rows`, Pareto front marked), the plots
(:func:`plot_candidates`: cost against agreement; :func:`plot_validation`) and the tables
on stdout (:func:`print_candidates`, :func:`print_validation`). Files are written through
:mod:`expedite_mm.analysis.report`.
"""
from __future__ import annotations

import dataclasses
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Sequence

from .autotune_measure import Tuner
from .autotune_space import STOCK, AutotuneOptions, Setting, apply_setting, pareto_front
from .report import finish_axes, new_figure, print_table, save_figure

#: the columns of autotune.csv
COLUMNS = ["family", "placement", "alpha", "grid", "grid_hw", "window", "keep_rate", "r",
           "gflops", "gflops_ratio", "backbone_gflops", "backbone_ratio", "flops",
           "latency_ms", "latency_ratio", "agreement", "agreement_measure", "images",
           "status", "pareto", "chosen"]
#: the columns of validation.csv
VALIDATION_COLUMNS = ["setting", "cost", "agreement", "true_metric", "true_metric_name"]


# --------------------------------------------------------------------------- the config
def _fixed_input(cfg: Any) -> bool:
    """Whether the config's input size is fixed (slide crops, a fixed preprocessor size, a
    classification crop)."""
    test_cfg = cfg.model.get("test_cfg") or {}
    return (test_cfg.get("mode") == "slide" or bool((cfg.model.get("data_preprocessor") or {})
                                                    .get("size"))
            or cfg.get("default_scope") == "mmpretrain")


def written_config(tuner: Tuner, chosen: Setting) -> Any:
    """The chosen setting's config, with a ratio grid written as h x w where the input size
    is fixed (slide crops, a fixed preprocessor size, a classification crop).

    Args:
        tuner: the run's tuner (its config and token grid).
        chosen: the chosen setting.
    """
    from ..ops.cluster import resolve_grid
    cfg = apply_setting(tuner.cfg, chosen)
    if chosen.grid is not None and _fixed_input(tuner.cfg):
        cfg.model.backbone["cluster_grid"] = tuple(resolve_grid(chosen.grid,
                                                                tuner.structure.token_grid))
    return cfg


def render_config(user_config: str, chosen_cfg: Any, header: Sequence[str]) -> str:
    """The text of ``autotune_config.py``: ``_base_`` = the user's config file + only what
    differs in the chosen model (the backbone keys of the setting, ``--cfg-options`` on the
    model).

    Args:
        user_config: the user's config file.
        chosen_cfg: the chosen model's config (:func:`written_config`).
        header: comment lines at the top.
    """
    from ..apis.config import config_text, load_config
    return config_text(osp.abspath(user_config), load_config(user_config), chosen_cfg, header)


def check_rendered(text: str, chosen_cfg: Any) -> None:
    """The written config must read back as the chosen model (else: a bug, not written):
    :func:`expedite_mm.apis.config.check_config_text`."""
    from ..apis.config import check_config_text
    check_config_text(text, chosen_cfg)


def config_header(options: AutotuneOptions, tuner: Tuner, chosen: Setting,
                  agreement: float, verified: Dict[str, Any], measure: str,
                  latency_mode: bool) -> List[str]:
    """The comment lines of the written config: the choice, the budget, the agreement.

    Args:
        options: the run's options.
        tuner: the run's tuner.
        chosen: the chosen setting.
        agreement: its agreement on all images (percent).
        verified: its verified cost (``cost``; ``latency_ms`` for a latency budget).
        measure: the agreement measure's name.
        latency_mode: whether the budget is a latency.
    """
    from ..ops.cluster import resolve_grid
    shape = f"{tuner.shape[0]}x{tuner.shape[1]}"
    what = chosen.label()
    if chosen.grid is not None:
        hw = resolve_grid(chosen.grid, tuner.structure.token_grid)
        what += (f" ({hw[0]}x{hw[1]} centres of the {tuner.structure.token_grid[0]}x"
                 f"{tuner.structure.token_grid[1]} token grid at {shape})")
    lines = [f"Chosen by tools/analysis/autotune.py: {what}."]
    if latency_mode:
        lines.append(f"Budget: {options.budget_latency_ms:g} ms on this machine "
                     f"({options.device}); measured {verified.get('latency_ms', 0):.1f} ms.")
    else:
        lines.append(f"Budget: {options.budget_on} GFLOPs <= {options.budget_gflops:g} x stock "
                     f"at {shape}; this config: {verified['cost']:.4f} (fvcore, counted).")
    lines.append(f"Agreement with the stock model on {len(tuner.images)} images: "
                 f"{agreement:.2f} % ({measure}).")
    lines.append("Only the keys the setting changes are set here; everything else is the base.")
    return lines


# --------------------------------------------------------------------------- the table
def candidate_rows(tuner: Tuner, settings: Sequence[Setting], flops: Dict[Setting, Dict[str, Any]],
                   candidates: Sequence[Setting], measured: Dict[Setting, Dict[str, Any]],
                   chosen: Setting, cost: Callable[[Setting], Optional[float]], budget: float,
                   latency_mode: bool, stock_latency: Optional[float]) -> List[Dict[str, Any]]:
    """The rows of ``autotune.csv``: the stock model, then every setting of the search
    space with its FLOPs, latency, agreement and what became of it; the Pareto front
    (over the settings measured on all images) marked.

    Args:
        tuner: the run's tuner.
        settings: the search space.
        flops: per setting, :meth:`Tuner.flops`.
        candidates: the settings the search measured.
        measured: per measured setting, its agreement, images and round.
        chosen: the chosen setting.
        cost: a setting's cost.
        budget: the budget.
        latency_mode: whether the budget is a latency.
        stock_latency: the stock model's latency (ms; latency budgets).
    """
    from ..ops.cluster import resolve_grid
    candidate_set = set(candidates)
    n = len(tuner.images)
    rows = []
    stock = tuner.flops(STOCK)
    stock_row = {"family": "stock", "label": "stock", "gflops": stock["gflops"],
                 "gflops_ratio": 1.0 if stock["gflops"] is not None else None,
                 "backbone_gflops": stock["backbone_gflops"], "backbone_ratio": 1.0,
                 "flops": "counted", "agreement": 100.0, "images": n, "status": "stock",
                 "all_images": True}
    if latency_mode:
        stock_row["latency_ms"] = stock_latency
    rows.append(stock_row)
    for s in sorted(settings, key=lambda s: (s.family, s.placement, s.grid or 0, s.window or 0,
                                            s.keep_rate or 0, s.r or 0, s.alpha or 0)):
        row: Dict[str, Any] = dict(dataclasses.asdict(s), label=s.label())
        f = flops[s]
        if "invalid" in f:
            row["status"] = "invalid: " + f["invalid"]
            rows.append(row)
            continue
        row.update({k: f[k] for k in ("gflops", "gflops_ratio", "backbone_gflops",
                                      "backbone_ratio", "flops")})
        if s.grid is not None:
            hw = resolve_grid(s.grid, tuner.structure.token_grid)
            row["grid_hw"] = f"{hw[0]}x{hw[1]}"
        measured_ms = tuner.measured_latency(s) if latency_mode else None
        if measured_ms is not None:
            row.update(latency_ms=measured_ms["latency_ms"],
                       latency_ratio=measured_ms["latency_ratio"])
        if s in measured:
            m = measured[s]
            row.update(agreement=m["agreement"], images=m["images"],
                       agreement_measure=tuner.agreement.name, all_images=m["images"] == n)
            row["status"] = ("chosen" if s == chosen else "finalist" if m["images"] == n
                             else f"stopped after round {m['round']}")
        elif cost(s) > budget:
            row["status"] = ("over budget (predicted latency)"
                             if latency_mode and measured_ms is None else "over budget")
        elif s not in candidate_set:
            row["status"] = "dominated (a feasible setting with a later alpha or a larger grid)"
        rows.append(row)
    x = cost_column(tuner.args, latency_mode)
    full = [r for r in rows if r.get("all_images") and r.get("agreement") is not None
            and (not latency_mode or r.get("latency_ms") is not None)]
    for i in pareto_front([(r[x], r["agreement"]) for r in full]):
        full[i]["pareto"] = True
    for r in rows:
        r.setdefault("pareto", False)
        r["chosen"] = r.get("status") == "chosen"
    return rows


def cost_column(options: AutotuneOptions, latency_mode: bool) -> str:
    """The column of the rows that the budget is on.

    Args:
        options: the run's options (``budget_on``).
        latency_mode: whether the budget is a latency.
    """
    if latency_mode:
        return "latency_ms"
    return "gflops_ratio" if options.budget_on == "whole" else "backbone_ratio"


# --------------------------------------------------------------------------- plots
def plot_candidates(rows: Sequence[Dict[str, Any]], path: str, x: str, xlabel: str,
                    measure: str, budget: float, title: str) -> None:
    """``autotune.png``: cost against agreement, the candidates measured on all images per
    family, those stopped early hollow, the Pareto front, the stock model, the budget and
    the choice.

    Args:
        rows: :func:`candidate_rows`.
        path: the image file.
        x: the cost column.
        xlabel: its axis name.
        measure: the agreement measure's name.
        budget: the budget (a vertical line).
        title: the plot's title.
    """
    fig, ax = new_figure()
    shown = [r for r in rows if r.get("agreement") is not None and r.get(x) is not None
             and r["status"] != "stock"]
    partial = [r for r in shown if not r.get("all_images")]
    full = [r for r in shown if r.get("all_images")]
    if partial:
        ax.scatter([r[x] for r in partial], [r["agreement"] for r in partial], s=14,
                   facecolors="none", edgecolors="gray", label="stopped early (fewer images)")
    families = sorted({r["family"] for r in full})
    for family in families:
        pts = [r for r in full if r["family"] == family]
        ax.scatter([r[x] for r in pts], [r["agreement"] for r in pts], s=22, label=family)
    front = sorted((r for r in rows if r.get("pareto") and r.get(x) is not None),
                   key=lambda r: r[x])
    if front:
        ax.step([r[x] for r in front], [r["agreement"] for r in front], where="post",
                color="black", linewidth=1, label="Pareto front")
    stock = [r for r in rows if r["status"] == "stock" and r.get(x) is not None]
    if stock:
        ax.scatter([stock[0][x]], [stock[0]["agreement"]], marker="x", color="black",
                   label="stock")
    chosen = [r for r in rows if r.get("chosen")]
    if chosen:
        ax.scatter([chosen[0][x]], [chosen[0]["agreement"]], marker="*", s=180, color="red",
                   zorder=5, label="chosen")
    ax.axvline(budget, color="red", linestyle="--", linewidth=1, label="budget")
    finish_axes(ax, xlabel, f"agreement with the stock model ({measure}, %)", title,
                legend_size=7)
    save_figure(fig, path)


def plot_validation(validation: Dict[str, Any], path: str, measure: str, xlabel: str,
                    title: str) -> None:
    """``validation.png``. Left: agreement against the true metric of every validated
    setting (Spearman's rho in the title). Right: cost against the true metric, per budget
    the tuner's pick (star) and the labelled oracle (ring).

    Args:
        validation: the validation's report (``rows``, ``budgets``, ...).
        path: the image file.
        measure: the agreement measure's name.
        xlabel: the cost axis's name.
        title: the figure's title.
    """
    import matplotlib
    rows, metric = validation["rows"], validation["metric"]
    fig, (left, right) = new_figure(2, (11, 4.5))
    left.scatter([r["agreement"] for r in rows], [r["true_metric"] for r in rows], s=14)
    finish_axes(left, f"agreement with the stock model ({measure}, %)", f"true {metric}",
                f"{validation['settings']} settings: Spearman rho "
                f"{validation['spearman_rho']:.3f}")
    right.scatter([r["cost"] for r in rows], [r["true_metric"] for r in rows], s=14,
                  color="gray", label="validated settings")
    right.axhline(validation["stock_true_metric"], color="black", linewidth=1,
                  label=f"stock ({validation['stock_true_metric']:.2f})")
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, b in zip(colours, validation["budgets"]):
        right.axvline(b["budget"], color=colour, linestyle="--", linewidth=1)
        if b["pick"] is not None:
            right.scatter([b["pick_cost"]], [b["pick_true_metric"]], marker="*", s=160,
                          color=colour, zorder=5, label=f"{b['budget']:g}: pick")
        if b["oracle"] is not None:
            right.scatter([b["oracle_cost"]], [b["oracle_true_metric"]], s=90,
                          facecolors="none", edgecolors=colour, linewidths=1.5, zorder=5,
                          label=f"{b['budget']:g}: oracle")
    finish_axes(right, xlabel, f"true {metric}",
                "the tuner's picks against the labelled oracle", legend_size=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


# --------------------------------------------------------------------------- stdout
def print_candidates(rows: Sequence[Dict[str, Any]], title: str, latency: bool) -> None:
    """The stdout table of the measured candidates: the Pareto front starred and bold, the
    choice in red.

    Args:
        rows: the rows to show (:func:`candidate_rows`, in order).
        title: the table's title.
        latency: whether to show the latency column.
    """
    columns = ["setting", "grid_hw", "gflops", "gflops_ratio", "backbone_ratio"]
    columns += ["latency_ms"] if latency else []
    columns += ["agreement", "images", "status"]
    print_table(title, columns, [[_cell(r, c) for c in columns] for r in rows],
                right=[c for c in columns if c not in ("setting", "status")],
                styles=["bold red" if r.get("chosen") else ("bold" if r.get("pareto") else None)
                        for r in rows])


def _cell(row: Dict[str, Any], column: str) -> str:
    if column == "setting":
        return row["label"] + (" *" if row.get("pareto") else "")
    value = row.get(column)
    if isinstance(value, float):
        return f"{value:.4g}" if column != "agreement" else f"{value:.2f}"
    return "" if value is None else str(value)


def print_validation(validation: Dict[str, Any]) -> None:
    """The stdout table of ``--validate``: per budget the pick, the oracle and the gap.

    Args:
        validation: the validation's report.
    """
    def number(value: Optional[float]) -> str:
        return "" if value is None else f"{value:.2f}"
    title = (f"validation: {validation['settings']} settings, Spearman rho "
             f"(agreement vs true {validation['metric']}) = "
             f"{validation['spearman_rho']:.3f}; stock {validation['metric']} "
             f"{validation['stock_true_metric']:.2f}")
    print_table(title, ["budget", "tuner's pick", "its true", "oracle", "oracle true", "gap"],
                [[f"{b['budget']:g}", str(b["pick"]), number(b["pick_true_metric"]),
                  str(b["oracle"]), number(b["oracle_true_metric"]), number(b["gap"])]
                 for b in validation["budgets"]])

