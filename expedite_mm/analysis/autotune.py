"""The autotuner: the expedite setting for a compute budget, without labels.

``tools/analysis/autotune.py`` parses the command line into :class:`AutotuneOptions` and
calls :func:`run`; docs/autotune.md describes the method. This module holds the search and
the run; the rest of the engine is in

* :mod:`~expedite_mm.analysis.autotune_space`: the options, the settings, the backbone's
  structure (from the family table :mod:`expedite_mm.models.families`), the search space,
  the budget's frontier and the Pareto front;
* :mod:`~expedite_mm.analysis.autotune_cache`: the cache of every measurement;
* :mod:`~expedite_mm.analysis.autotune_measure`: the images, the :class:`Tuner` (FLOPs
  per chain, latency, agreement, the evaluator) and successive halving;
* :mod:`~expedite_mm.analysis.autotune_output`: the written config, the CSV rows, the
  plots and the tables.

The run: 1. every setting's FLOPs (one count per chain; a budget nothing meets stops
before anything is written), 2. the cost of the budget (the FLOP ratio, or the latency
predicted from the FLOPs and measured for the candidates), 3. the candidates (the feasible
settings no feasible one dominates) measured by successive halving on their agreement
with the stock model, 4. the best agreement within the budget, verified by a real count
(or measured latency) of the config that is written; with ``validate``, every feasible
setting also scored by the config's evaluator (:func:`validate`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import os.path as osp
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .autotune_cache import Cache
from .autotune_measure import (IMAGE_EXTENSIONS, CandidateModels, Image, Tuner, dataset_images,
                               folder_images, list_images, successive_halving)
from .autotune_output import (COLUMNS, VALIDATION_COLUMNS, candidate_rows, check_rendered,
                              config_header, cost_column, plot_candidates, plot_validation,
                              print_candidates, print_validation, render_config,
                              written_config)
from .autotune_space import (DEFAULT_KEEP_RATES, DEFAULT_RATIOS, DEFAULT_TOME_R,
                             DEFAULT_VALIDATE_BUDGETS, EXIT_BUDGET, EXIT_INPUT, KIND_FAMILIES,
                             SEARCH_FAMILIES, STOCK, AutotuneError, AutotuneOptions, Setting,
                             Structure, apply_setting, family_kind, first_line, pareto_front,
                             probe_structure, search_space, setting_sizes, tight)
from .report import write_csv, write_json, write_text

__all__ = [
    "AutotuneError", "AutotuneOptions", "COLUMNS", "Cache", "CandidateModels",
    "DEFAULT_KEEP_RATES", "DEFAULT_RATIOS", "DEFAULT_TOME_R", "DEFAULT_VALIDATE_BUDGETS",
    "EXIT_BUDGET", "EXIT_INPUT", "IMAGE_EXTENSIONS", "Image", "KIND_FAMILIES",
    "SEARCH_FAMILIES", "STOCK", "Setting", "Structure", "Tuner", "apply_setting", "choose",
    "dataset_images", "folder_images", "list_images", "load_inputs", "pareto_front",
    "probe_structure", "run", "search_space", "select", "spearman", "successive_halving",
    "tight", "validate"]


# --------------------------------------------------------------------------- the search
def choose(measured: Dict[Setting, Dict[str, Any]], n_images: int,
           cost: Callable[[Setting], float], budget: float) -> Optional[Setting]:
    """The best agreement on all images within the budget (ties: the cheaper).

    Args:
        measured: per measured setting, its agreement and on how many images.
        n_images: all the images.
        cost: a setting's cost.
        budget: the budget.
    """
    final = [s for s, m in measured.items() if m["images"] == n_images and cost(s) <= budget]
    if not final:
        return None
    return min(final, key=lambda s: (-measured[s]["agreement"], cost(s), s.key))


def select(tuner: Tuner, settings: Sequence[Setting], budget: float,
           cost: Callable[[Setting], Optional[float]], progress: bool,
           all_feasible: Optional[bool] = None, first_images: Optional[int] = None
           ) -> Tuple[List[Setting], Dict[Setting, Dict[str, Any]], Optional[Setting]]:
    """The tuner's whole decision at one budget: candidates, halving, choice.

    Args:
        tuner: measures.
        settings: the search space (settings that build).
        budget: the budget.
        cost: a setting's cost (None: unknown, not feasible).
        progress: show progress bars.
        all_feasible: measure every feasible setting (None: the run's option).
        first_images: the images of the first round (None: the run's option).

    Returns:
        ``(candidates, measured, chosen)``; ``chosen`` is None if nothing meets the budget.
    """
    options = tuner.args
    all_feasible = options.all_feasible if all_feasible is None else all_feasible
    first_images = options.first_images if first_images is None else first_images
    feasible = lambda s: cost(s) is not None and cost(s) <= budget  # noqa: E731
    candidates = ([s for s in settings if feasible(s)] if all_feasible
                  else tight(settings, feasible, setting_sizes(settings)))
    candidates.sort(key=lambda s: (-cost(s), s.key))
    measured = successive_halving(tuner, candidates, tuner.images, first_images, options.eta,
                                  cost, progress)
    return candidates, measured, choose(measured, len(tuner.images), cost, budget)


def latency_costs(tuner: Tuner, settings: Sequence[Setting],
                  flops: Dict[Setting, Dict[str, Any]], stock_latency: float,
                  quiet: bool) -> Tuple[Callable[[Setting], float], float]:
    """Latency as the cost: predicted from the FLOPs (an affine fit through the settings
    measured so far), then measured for every candidate the prediction lets through,
    until the candidates are all measured.

    Args:
        tuner: measures (its options give the budget and ``all_feasible``).
        settings: the settings that build.
        flops: per setting, :meth:`Tuner.flops`.
        stock_latency: the stock model's latency (ms).
        quiet: no progress bars.

    Returns:
        ``(cost, budget)``: a setting's latency (measured, else predicted) and the budget.
    """
    from tqdm import tqdm
    options = tuner.args
    budget = options.budget_latency_ms
    measured: Dict[Setting, float] = {}

    def fit() -> Callable[[float], float]:
        points = [(flops[s]["cost"], m) for s, m in measured.items()]
        points.append((1.0, stock_latency))
        if len(points) < 2:
            return lambda r: r * stock_latency
        xs, ys = zip(*points)
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else my / mx
        return lambda r: my + slope * (r - mx)

    sizes = setting_sizes(settings)
    for _ in range(6):
        model = fit()
        cost = lambda s: measured.get(s, model(flops[s]["cost"]))  # noqa: E731
        feasible = lambda s: cost(s) <= budget  # noqa: E731
        wanted = ([s for s in settings if feasible(s)] if options.all_feasible
                  else tight(settings, feasible, sizes))
        todo = [s for s in wanted if s not in measured]
        if not todo:
            break
        for s in tqdm(todo, desc="latency", disable=quiet, unit="setting"):
            measured[s] = tuner.latency(s)["latency_ms"]
    final = fit()
    return (lambda s: measured.get(s, final(flops[s]["cost"]))), budget


# --------------------------------------------------------------------------- validation
def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties).

    Args:
        x: the first values.
        y: the second values, as many.
    """
    def ranks(values: Sequence[float]) -> List[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else float("nan")


def validate(tuner: Tuner, settings: Sequence[Setting],
             cost: Callable[[Setting], Optional[float]]) -> Dict[str, Any]:
    """Every feasible setting (at the largest budget) on all images, with the true metric;
    then the tuner's pick per budget against the labelled oracle at that budget.

    Args:
        tuner: measures (its options give ``validate_budgets``; ``validate`` must be on).
        settings: the settings that build.
        cost: a setting's GFLOPs cost.

    Returns:
        The report: ``metric``, ``stock_true_metric``, ``settings``, ``spearman_rho``,
        per budget the pick, the oracle and the gap (``budgets``), and every setting's
        agreement and true metric (``rows``).
    """
    options = tuner.args
    top = max(options.validate_budgets)
    everything = [s for s in settings if cost(s) is not None and cost(s) <= top]
    _, measured, _ = select(tuner, everything, top, cost, not options.quiet,
                            all_feasible=True, first_images=len(tuner.images))
    rows = []
    for s in everything:
        name, value = tuner.true_metric(s, tuner.images)
        rows.append({"setting": s, "label": s.label(), "cost": cost(s),
                     "agreement": measured[s]["agreement"], "true_metric": value,
                     "true_metric_name": name})
    stock_name, stock_value = tuner.true_metric(STOCK, tuner.images)
    rho = spearman([r["agreement"] for r in rows], [r["true_metric"] for r in rows]) \
        if len(rows) >= 2 else float("nan")
    truth = {r["setting"]: r["true_metric"] for r in rows}
    budgets = []
    for budget in sorted(options.validate_budgets):
        _, _, pick = select(tuner, settings, budget, cost, False)   # all cached now
        within = [r for r in rows if r["cost"] <= budget]
        oracle = max(within, key=lambda r: (r["true_metric"], -r["cost"])) if within else None
        budgets.append({
            "budget": budget,
            "pick": pick.label() if pick else None,
            "pick_true_metric": truth.get(pick) if pick else None,
            "pick_cost": cost(pick) if pick else None,
            "oracle": oracle["label"] if oracle else None,
            "oracle_true_metric": oracle["true_metric"] if oracle else None,
            "oracle_cost": oracle["cost"] if oracle else None,
            "gap": (oracle["true_metric"] - truth[pick]) if pick and oracle else None})
    return {"metric": stock_name, "stock_true_metric": stock_value, "settings": len(rows),
            "spearman_rho": rho, "budgets": budgets, "rows": rows}


# --------------------------------------------------------------------------- the run
def load_inputs(options: AutotuneOptions) -> Tuple[Any, Any, Any, List[Image], Any]:
    """Everything that can be wrong with the input, checked before anything is written.

    Args:
        options: the run's options.

    Returns:
        ``(user config, expedited-type config, stock model, images, test set or None)``.

    Raises:
        AutotuneError: a config, checkpoint, image folder or test set that cannot be
            read, a backbone that cannot be expedited, a family it does not take.
    """
    from mmengine.registry import init_default_scope

    from ..apis.checkpoint import CheckpointError
    from ..apis.config import (as_expedited, build_model, disable_expedite,
                               import_custom_modules, load_config)
    from ..registration import register_all_modules
    register_all_modules()  # registers the backbones
    if not osp.isfile(options.config):
        raise AutotuneError(f"config {options.config}: no such file")
    try:
        user_cfg = load_config(options.config, options.cfg_options)
    except Exception as error:  # noqa: BLE001 - mmengine raises many kinds
        raise AutotuneError(f"cannot read config {options.config}: {first_line(error)}") \
            from None
    try:
        cfg, _ = as_expedited(user_cfg)
    except ValueError as error:
        raise AutotuneError(str(error)) from None
    kind = family_kind(cfg.model.backbone.type)
    unsupported = [f for f in options.families if f not in KIND_FAMILIES[kind]]
    if unsupported:
        raise AutotuneError(f"--families {','.join(unsupported)}: not available for "
                            f"{cfg.model.backbone.type} (it takes "
                            f"{', '.join(KIND_FAMILIES[kind])})")
    import_custom_modules(cfg)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    dataset = None
    if options.images:
        images = folder_images(cfg, list_images(options.images))
    else:
        images, dataset = dataset_images(cfg, options.val)
        if options.validate and "test_evaluator" not in cfg:
            raise AutotuneError("--validate: the config has no test_evaluator")
    if not (osp.exists(options.checkpoint) or "://" in options.checkpoint):
        raise AutotuneError(f"checkpoint {options.checkpoint}: no such file")
    try:
        stock = build_model(disable_expedite(cfg), options.checkpoint, options.device,
                            options.trust_checkpoint, options.allow_partial_load)
    except CheckpointError as error:
        raise AutotuneError(first_line(error)) from None
    except (ValueError, TypeError, KeyError) as error:
        raise AutotuneError(f"cannot build the model of {options.config}: "
                            f"{first_line(error)}") from None
    return user_cfg, cfg, stock, images, dataset


def run(options: AutotuneOptions) -> int:
    """Tune: search, choose, verify, and write the outputs in ``options.work_dir``
    (``autotune_config.py``, ``autotune.csv``, ``autotune.png``, ``autotune.json``, the
    ``cache.sqlite`` of every measurement; with ``validate`` also ``validation.*``); the
    tables and the choice on stdout.

    Args:
        options: the run's options (checked: ``tools/analysis/autotune.py``'s parser).

    Returns:
        0 (also when the stock model already meets a latency budget: said on stderr).

    Raises:
        AutotuneError: bad input (code 2; nothing written), no setting meets the budget
            (code 3).
        KeyboardInterrupt: passed on; what was measured is in the cache.
    """
    user_cfg, cfg, stock, images, dataset = load_inputs(options)
    tuner = Tuner(options, cfg, stock, images, dataset)
    cache_path = osp.join(options.work_dir, "cache.sqlite")
    tuner.cache.read(cache_path)
    settings = search_space(options, cfg, tuner.structure)
    tuner.prepare_chains(settings)
    latency_mode = options.budget_latency_ms is not None

    # 1. FLOPs: the stock model and the cheapest setting of every chain group first (in
    # memory), so a budget nothing meets stops before anything is written
    tuner.stock_flops()
    groups: Dict[Tuple[str, str], List[Setting]] = {}
    for s in settings:
        groups.setdefault((s.family, s.placement), []).append(s)
    cheapest_each = [min(members, key=lambda s: (s.grid or 0, s.window or 0, s.keep_rate or 0,
                                                 -(s.r or 0), s.alpha or 0))
                     for members in groups.values()]
    costs_known = {s: tuner.flops(s) for s in cheapest_each}
    valid = {s: c for s, c in costs_known.items() if "invalid" not in c}
    known = bool(valid)     # (else the other settings are counted below)
    if not known:
        valid = {STOCK: {"cost": -math.inf}}
    cheapest = min(valid, key=lambda s: valid[s]["cost"])
    if not latency_mode and valid[cheapest]["cost"] > options.budget_gflops:
        raise AutotuneError(
            f"no setting meets --budget-gflops {options.budget_gflops:g}: the cheapest, "
            f"{cheapest.label()}, has a {options.budget_on} GFLOPs ratio of "
            f"{valid[cheapest]['cost']:.3f}", EXIT_BUDGET)
    stock_latency = None
    if latency_mode:
        measured = tuner.latency(cheapest)
        stock_latency = measured["stock_ms"]
        if stock_latency <= options.budget_latency_ms:
            print(f"the stock model already runs in {stock_latency:.1f} ms <= "
                  f"{options.budget_latency_ms:g} ms: nothing to expedite", file=sys.stderr)
            return 0
        if known and measured["latency_ms"] > options.budget_latency_ms:
            raise AutotuneError(
                f"no setting meets --budget-latency-ms {options.budget_latency_ms:g}: the "
                f"cheapest by FLOPs, {cheapest.label()}, takes {measured['latency_ms']:.1f} ms "
                f"(stock {stock_latency:.1f} ms)", EXIT_BUDGET)

    # from here on measurements are kept in the work dir
    tuner.cache.open(cache_path)
    try:
        return _search(options, tuner, settings, latency_mode, stock_latency)
    finally:
        tuner.cache.close()


def _search(options: AutotuneOptions, tuner: Tuner, settings: List[Setting],
            latency_mode: bool, stock_latency: Optional[float]) -> int:
    quiet = options.quiet
    from tqdm import tqdm

    # 2. FLOPs of every setting: one count per chain, the rest follows
    chains = sorted({s.chain if s.alpha is not None else s for s in settings}, key=lambda s: s.key)
    for chain in tqdm(chains, desc="FLOPs (one count per chain)", disable=quiet, unit="count"):
        tuner.flops(dataclasses.replace(chain, alpha=tuner.chain_alphas[chain][0])
                    if chain in tuner.chain_alphas else chain)
    tuner.check_flop_model()
    flops = {s: tuner.flops(s) for s in settings}
    valid_settings = [s for s in settings if "invalid" not in flops[s]]
    if not valid_settings:
        raise AutotuneError("no setting of the search space builds: " + "; ".join(
            sorted({flops[s]["invalid"] for s in settings})))

    # 3. the cost of the budget: the FLOP ratio, or the measured latency
    if latency_mode:
        cost, budget = latency_costs(tuner, valid_settings, flops, stock_latency, quiet)
    else:
        cost = lambda s: flops[s]["cost"] if "invalid" not in flops[s] else None  # noqa: E731
        budget = options.budget_gflops

    # 4. agreement: successive halving over the candidates
    candidates, measured, chosen = select(tuner, valid_settings, budget, cost, not quiet)
    validation = validate(tuner, valid_settings, cost) if options.validate else None

    if chosen is None:
        raise AutotuneError(f"no setting meets the budget ({budget:g}"
                            f"{' ms, measured' if latency_mode else ''})", EXIT_BUDGET)
    # 5. the config, verified by a real count (or the measured latency)
    chosen_cfg = written_config(tuner, chosen)
    verified = verify(tuner, chosen, chosen_cfg)
    if not latency_mode and verified["cost"] > budget + 1e-12:
        raise AutotuneError(f"the chosen setting counts {verified['cost']:.4f} > budget "
                            f"{budget:g} (the FLOP model was off); rerun with the same work "
                            f"dir", EXIT_BUDGET)
    if latency_mode and verified["latency_ms"] > budget:
        raise AutotuneError(f"the chosen setting, {chosen.label()}, measured "
                            f"{verified['latency_ms']:.1f} ms > {budget:g} ms", EXIT_BUDGET)
    rows = candidate_rows(tuner, settings, flops, candidates, measured, chosen, cost, budget,
                          latency_mode, stock_latency)
    _report(options, tuner, rows, chosen, chosen_cfg, measured[chosen]["agreement"], verified,
            budget, latency_mode, validation,
            {"candidates": len(candidates), "settings": len(settings)})
    return 0


def verify(tuner: Tuner, chosen: Setting, chosen_cfg: Any) -> Dict[str, Any]:
    """A real fvcore count of the config that is written (and its measured latency).

    Args:
        tuner: the run's tuner.
        chosen: the chosen setting.
        chosen_cfg: its written config (:func:`written_config`).

    Returns:
        ``gflops``, ``backbone_gflops``, their ratios, ``cost`` (the budget's ratio) and,
        for a latency budget, the latency.
    """
    from ..apis.config import build_model
    from .flops import model_flops
    options = tuner.args
    stock = tuner.stock_flops()
    model = build_model(chosen_cfg, device=options.device)
    counted = model_flops(model, tuner.shape, backbone_only=options.budget_on == "backbone")
    tuner.flop_counts += 1
    out = {"gflops": None if counted.whole is None else counted.whole / 1e9,
           "backbone_gflops": counted.backbone / 1e9,
           "gflops_ratio": (counted.whole / stock["whole"]
                            if counted.whole is not None and stock["whole"] else None),
           "backbone_ratio": counted.backbone / stock["backbone"]}
    out["cost"] = out["gflops_ratio" if options.budget_on == "whole" else "backbone_ratio"]
    if options.budget_latency_ms is not None:
        out.update(tuner.latency(chosen))
    return out


def _report(options: AutotuneOptions, tuner: Tuner, rows: List[Dict[str, Any]],
            chosen: Setting, chosen_cfg: Any, agreement: float, verified: Dict[str, Any],
            budget: float, latency_mode: bool, validation: Optional[Dict[str, Any]],
            counts: Dict[str, int]) -> None:
    """Write the outputs (each atomically; the config last) and print the tables."""
    work_dir = options.work_dir
    measure = tuner.agreement.name
    header = config_header(options, tuner, chosen, agreement, verified, measure, latency_mode)
    text = render_config(options.config, chosen_cfg, header)
    check_rendered(text, chosen_cfg)
    x = cost_column(options, latency_mode)
    xlabel = ("latency (ms, this machine)" if latency_mode else
              f"{options.budget_on} GFLOPs / stock (fvcore, {tuner.shape[0]}x{tuner.shape[1]})")
    title = f"{osp.basename(options.config)}: {len(tuner.images)} images"
    write_csv(osp.join(work_dir, "autotune.csv"), rows, COLUMNS)
    plot_candidates(rows, osp.join(work_dir, "autotune.png"), x, xlabel, measure, budget, title)
    summary = {"config": osp.abspath(options.config), "checkpoint": options.checkpoint,
               "budget": budget, "budget_kind": "latency_ms" if latency_mode else
               f"{options.budget_on}_gflops_ratio", "shape": list(tuner.shape),
               "images": len(tuner.images), "agreement_measure": measure,
               "chosen": dataclasses.asdict(chosen), "chosen_label": chosen.label(),
               "agreement": agreement, "verified": verified,
               "candidates": counts["candidates"], "settings": counts["settings"],
               "forwards": tuner.forwards, "flop_counts": tuner.flop_counts,
               "cache_hits": tuner.cache.hits}
    if validation is not None:
        summary["validation"] = {k: v for k, v in validation.items() if k != "rows"}
        write_csv(osp.join(work_dir, "validation.csv"),
                  [dict(r, setting=r["label"]) for r in validation["rows"]], VALIDATION_COLUMNS)
        write_json(osp.join(work_dir, "validation.json"), summary["validation"])
        plot_validation(validation, osp.join(work_dir, "validation.png"), measure,
                        f"{options.budget_on} GFLOPs / stock", title)
    write_json(osp.join(work_dir, "autotune.json"), summary)
    config_path = osp.join(work_dir, "autotune_config.py")
    write_text(config_path, text)

    shown = sorted((r for r in rows if r.get("agreement") is not None),
                   key=lambda r: (r.get(x) is None, r.get(x) or 0))
    print_candidates(shown, f"{title} - {measure} agreement with the stock model "
                            f"(* Pareto front, red: chosen)", latency_mode)
    if validation is not None:
        print_validation(validation)
    print(f"chosen: {chosen.label()}  agreement {agreement:.2f} % "
          f"({measure}, {len(tuner.images)} images), "
          + (f"{verified['latency_ms']:.1f} ms (budget {budget:g} ms)" if latency_mode else
             f"{options.budget_on} GFLOPs ratio {verified['cost']:.4f} (budget {budget:g}, "
             f"fvcore-verified)"))
    print(f"measured {tuner.forwards} forwards and {tuner.flop_counts} FLOP counts "
          f"({tuner.cache.hits} cache hits); wrote {config_path}, autotune.csv, "
          f"autotune.png, autotune.json in {work_dir}")


def expedite_for_budget(config: str, options: AutotuneOptions) -> str:
    """``expedite-mm expedite --budget-gflops``: the tuner's choice for a budget, as a config
    that inherits ``config`` by the name it was given (a path or ``mmseg::...``).

    Args:
        config: the stock config.
        options: the tuner's options; its ``config`` is replaced by a file in
            ``work_dir`` that inherits ``config`` (the tuner reads files).

    Returns:
        The config's text (``autotune_config.py`` of ``work_dir``, with ``_base_`` =
        ``config``).

    Raises:
        AutotuneError: as :func:`run` (nothing written but the work dir's files).
    """
    os.makedirs(options.work_dir, exist_ok=True)
    stub = osp.join(options.work_dir, "stock_config.py")
    base = config if "::" in config else osp.abspath(config)
    with open(stub, "w") as f:
        f.write(f"_base_ = {base!r}\n")
    run(dataclasses.replace(options, config=stub))
    with open(osp.join(options.work_dir, "autotune_config.py")) as f:
        text = f.read()
    return text.replace(f"_base_ = {osp.abspath(stub)!r}", f"_base_ = {base!r}")
