"""The zoo-wide check (``tools/analysis/zoo_coverage.py``, docs/coverage.md): every config the
installed OpenMMLab packages ship, its backbone found, the transformer ones expedited by
the default rule and checked with random weights.

Each config runs in a child process of its own, under a time limit and a memory cap: a
config that fails, hangs or runs out of memory becomes its row's reason, not the end of
the walk (over the cap, the reason is the refused allocation's error: ``MemoryError``,
torch's "can't allocate memory", or whatever the C extension that asked raises). In the child:

1. the config is parsed (mmengine, as ``_base_ = '<package>::<config>'`` would load it) and
   its backbone found where the model nests it (:data:`BACKBONE_PATHS`);
2. a backbone type of :data:`TRANSFORMERS` is converted: the family table's expedited type
   (:func:`~expedite_mm.apis.config.as_expedited`) with the default rule's setting
   (:func:`~expedite_mm.apis.expedite.default_cluster_after`, the operators' default size,
   :func:`~expedite_mm.apis.expedite.required_settings`);
3. it is checked: the stock and the expedited backbone are built with the same random
   weights (the same state-dict keys, loaded as the stock class loads its own); with
   expediting disabled the outputs equal the stock ones bit for bit at a small input (the
   config's own size where the stock backbone refuses the small one); expedited, the
   forward runs and gives the stock shapes; the backbone's fvcore GFLOPs ratio at the
   config's own input size is below 1.
"""
from __future__ import annotations

import csv
import dataclasses
import multiprocessing
import os
import os.path as osp
import time
import traceback
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..apis.expedite import BACKBONE_PATHS, find_backbone

#: the packages walked
PACKAGES = ("mmseg", "mmdet", "mmpretrain")

#: backbone types counted as transformers (attention over image tokens in every block or
#: in most of them; hybrids with attention stages included); a type a package prefixes
#: (``mmpretrain.SwinTransformerV2``) counts by its name
TRANSFORMERS = frozenset({
    # plain ViTs
    "VisionTransformer", "DistilledVisionTransformer", "DeiT3", "BEiT", "BEiTViT", "MAE",
    "MAEViT", "ViTEVA02", "ViTSAM", "RevVisionTransformer", "CAEPretrainViT",
    "BEiTPretrainViT", "MaskFeatViT", "MILANViT", "T2T_ViT", "TNT", "XCiT", "LeViT",
    "HybridViT",
    # hierarchical / windowed
    "SwinTransformer", "SwinTransformerV2", "SimMIMSwinTransformer", "MixVisionTransformer",
    "PCPVT", "SVT", "PyramidVisionTransformer", "PyramidVisionTransformerV2", "MViT",
    "HiViT", "MAEHiViT", "iTPNHiViT", "MixMIMTransformer", "MixMIMPretrainTransformer",
    "DaViT", "TinyViT", "EfficientFormer", "EfficientViT", "Conformer", "MobileViT",
})

#: the fixed sample ``make test`` walks (``--sample``): one config per covered family kind
#: in each package, the first uncovered transformer and a CNN (cheap models)
SAMPLE = (
    ("mmseg", "segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py"),
    ("mmseg", "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py"),
    ("mmseg", "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"),
    ("mmseg", "segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py"),
    ("mmseg", "fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py"),
    ("mmdet", "swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py"),
    ("mmpretrain", "deit/deit-tiny_4xb256_in1k.py"),
    ("mmpretrain", "levit/deploy/levit-128s_8xb256_in1k.py"),
)

#: the distribution that installs each package
_DISTRIBUTIONS = {"mmseg": "mmsegmentation"}

#: the columns of coverage.csv
COLUMNS = ["package", "config", "backbone_path", "backbone_type", "transformer", "converted",
           "passed", "expedited_type", "setting", "input_size", "gflops_stock",
           "gflops_expedited", "gflops_ratio", "seconds", "reason"]


@dataclass
class Row:
    """One config's result.

    Args:
        package: the package that ships it.
        config: its path under the package's configs.
        backbone_path: where the model nests the backbone ('' if none found).
        backbone_type: the backbone's type ('' if none found).
        transformer: whether the type is in :data:`TRANSFORMERS`.
        converted: whether a family expedites it.
        passed: whether every check passed.
        expedited_type: the expedited type it was converted to.
        setting: the default rule's setting, as text.
        input_size: the config's own input (H, W) the GFLOPs are counted at.
        gflops_stock / gflops_expedited / gflops_ratio: the backbone's fvcore counts.
        seconds: the child's time.
        reason: why it did not pass (one line), or '' if it did.
    """

    package: str
    config: str
    backbone_path: str = ""
    backbone_type: str = ""
    transformer: bool = False
    converted: bool = False
    passed: bool = False
    expedited_type: str = ""
    setting: str = ""
    input_size: str = ""
    gflops_stock: Optional[float] = None
    gflops_expedited: Optional[float] = None
    gflops_ratio: Optional[float] = None
    seconds: float = 0.0
    reason: str = ""


def configs_dir(package: str) -> str:
    """The configs an installed package ships (``<package>/.mim/configs``)."""
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package} is not installed")
    return osp.join(list(spec.submodule_search_locations)[0], ".mim", "configs")


def shipped_configs(package: str) -> List[str]:
    """Every config ``package`` ships, outside ``_base_`` folders, sorted."""
    root = configs_dir(package)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "_base_" and not d.startswith("__"))
        found += [osp.relpath(osp.join(folder, f), root) for f in files if f.endswith(".py")]
    return sorted(found)


def type_name(backbone_type: Any) -> str:
    """A backbone type's name without its package prefix (a class: its name)."""
    return backbone_type.__name__ if isinstance(backbone_type, type) else \
        str(backbone_type).rpartition(".")[2]


# --------------------------------------------------------------------------- one config
def survey(package: str, config: str) -> Tuple[Row, Any]:
    """Parse one config and find its backbone: ``(row, config)``; the row is final (its
    reason set) unless the backbone is a transformer, which :func:`check` then checks."""
    from ..apis.expedite import load_stock
    row = Row(package, config)
    try:
        cfg = load_stock(f"{package}::{config}")
    except Exception as error:  # noqa: BLE001 - a config's failure is its row's reason
        row.reason = f"does not parse: {_one_line(error)}"
        return row, None
    row.backbone_path, backbone = find_backbone(cfg.get("model") or {})
    if backbone is None:
        row.reason = "no backbone found"
        return row, cfg
    row.backbone_type = type_name(backbone["type"])
    row.transformer = row.backbone_type in TRANSFORMERS
    if not row.transformer:
        row.reason = "not a transformer backbone"
    return row, cfg


def check(row: Row, cfg: Any, small: Tuple[int, int] = (160, 224),
          count_flops: bool = True) -> Row:
    """Convert and check a transformer backbone's config (``row`` from :func:`survey`), in
    this process (:func:`walk` runs it in a child). Never raises for the config's sake: an
    error is the row's reason."""
    try:
        _check(row, cfg, small, count_flops)
    except Exception as error:  # noqa: BLE001 - a config's failure is its row's reason
        where = traceback.extract_tb(error.__traceback__)[-1]
        row.reason = f"{_one_line(error)} ({osp.basename(where.filename)}:{where.lineno})"
    return row


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def _check(row: Row, cfg: Any, small: Tuple[int, int], count_flops: bool) -> None:
    import torch
    from mmengine.config import Config

    from ..apis.config import as_expedited, default_input_shape, flatten_outputs
    from ..apis.expedite import build_backbone, default_cluster_after, required_settings
    from ..models.families import BY_NAME
    from ..registration import register_all_modules
    register_all_modules()

    _, backbone = find_backbone(cfg.model)
    scope = cfg.get("default_scope") or row.package
    stock_cfg = Config(dict(default_scope=scope, model=dict(backbone=dict(backbone))))
    try:
        expedited_cfg, _ = as_expedited(stock_cfg)
    except ValueError:
        row.reason = f"no family expedites {row.backbone_type}"
        return
    row.converted = True
    family = BY_NAME[str(expedited_cfg.model.backbone.type)]
    row.expedited_type = family.name

    def build(backbone_cfg: dict) -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_backbone(backbone_cfg, scope)
        model.eval()
        return model

    stock = build(stock_cfg.model.backbone)
    disabled = build(expedited_cfg.model.backbone)
    depth = disabled.expedite_depth
    setting = dict(cluster_after=default_cluster_after(depth),
                   **required_settings(expedited_cfg.model.backbone))
    row.setting = ", ".join(f"{k}={v}" for k, v in setting.items())
    expedited = build(dict(expedited_cfg.model.backbone, **setting))
    keys = list(stock.state_dict())
    if list(disabled.state_dict()) != keys or list(expedited.state_dict()) != keys:
        row.reason = "state-dict keys differ from the stock backbone's"
        return
    weights = stock.state_dict()
    # loaded as the stock class loads its own: some drop keys in a load hook (mmpretrain's
    # SwinV2 re-derives its position tables), so strict loading fails on stock as well
    accepted = stock.load_state_dict(weights, strict=False)
    for model in (disabled, expedited):
        loaded = model.load_state_dict(weights, strict=False)
        if (loaded.missing_keys, loaded.unexpected_keys) != (accepted.missing_keys,
                                                             accepted.unexpected_keys):
            row.reason = "the stock state dict does not load as into the stock backbone"
            return
    try:
        shape = default_input_shape(cfg)
    except ValueError:
        shape = backbone.get("img_size") or (224, 224)
    shape = (shape, shape) if isinstance(shape, int) else tuple(shape)
    channels = backbone.get("in_channels", 3)          # (change detection: two images, 6)
    channels = channels if isinstance(channels, int) else 3
    x = torch.rand(1, channels, *small)
    with torch.no_grad():
        try:
            reference = flatten_outputs(stock(x))
        except (AssertionError, RuntimeError, ValueError):   # too small for the stock model
            x = torch.rand(1, channels, *shape)             # (e.g. a window above its map)
            reference = flatten_outputs(stock(x))
        same = flatten_outputs(disabled(x))
        fast = flatten_outputs(expedited(x))
    if len(same) != len(reference) or not all(torch.equal(a, b) for a, b in zip(same, reference)):
        row.reason = "expediting disabled is not bit-equal to the stock backbone"
        return
    if [t.shape for t in fast] != [t.shape for t in reference]:
        row.reason = "expedited outputs have other shapes than the stock ones"
        return
    if count_flops:
        from .flops import count_flops as fvcore_count
        row.input_size = f"{shape[0]}x{shape[1]}"
        del disabled
        full = torch.rand(1, channels, *shape)
        stock_flops = fvcore_count(stock, (full,)).total
        del stock
        expedited_flops = fvcore_count(expedited, (full,)).total
        row.gflops_stock = round(stock_flops / 1e9, 3)
        row.gflops_expedited = round(expedited_flops / 1e9, 3)
        row.gflops_ratio = round(expedited_flops / stock_flops, 4)
        if not row.gflops_ratio < 1:
            row.reason = f"GFLOPs ratio {row.gflops_ratio:.3f} at {row.input_size} is not below 1"
            return
    row.passed = True


# --------------------------------------------------------------------------- the walk
def _child(connection, row: Row, cfg: Any, memory_gb: float, count_flops: bool) -> None:
    import resource
    import torch
    torch.set_num_threads(1)
    if memory_gb:
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        limit = vm + int(memory_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    start = time.perf_counter()
    try:
        row = check(row, cfg, count_flops=count_flops)
    except MemoryError:
        row.passed, row.reason = False, f"over the memory cap ({memory_gb:g} GB)"
    if "can't allocate memory" in row.reason or row.reason.startswith("MemoryError"):
        row.reason = f"over the memory cap ({memory_gb:g} GB): {row.reason}"   # torch's
    row.seconds = round(time.perf_counter() - start, 2)
    connection.send(asdict(row))
    connection.close()


def check_in_child(row: Row, cfg: Any, timeout_s: float = 600, memory_gb: float = 12,
                   count_flops: bool = True) -> Row:
    """:func:`check` in a child process (forked: the parsed config and the imports are
    the parent's) under a time limit and a memory cap (address space on top of what the
    child starts with: heap its parent had freed is reused uncounted, so the cap holds for
    a parent that only parsed configs, as the walk's does, not for one that built models)."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, row, cfg, memory_gb, count_flops),
                              daemon=True)
    start = time.perf_counter()
    process.start()
    send.close()
    result = None
    if receive.poll(timeout_s):
        try:
            result = Row(**receive.recv())
        except EOFError:
            result = dataclasses.replace(row, reason=f"the check's process died (exit code "
                                                     f"{process.exitcode}; out of memory?)")
    else:
        result = dataclasses.replace(row, reason=f"over the time limit ({timeout_s:g} s)")
        process.kill()
    process.join(10)
    if not result.seconds:
        result.seconds = round(time.perf_counter() - start, 2)
    return result


def walk(configs: Iterable[Tuple[str, str]], csv_path: Optional[str] = None,
         timeout_s: float = 600, memory_gb: float = 12, count_flops: bool = True,
         progress: Any = None, done: Sequence[Row] = ()) -> List[Row]:
    """Check every ``(package, config)``, each in its own child; with ``csv_path`` the CSV
    is rewritten after every row (a walk cut short keeps its rows). Rows in ``done`` (a
    resumed walk's) are kept and their configs not checked again."""
    from ..registration import register_all_modules   # once here, for every forked child
    register_all_modules()
    rows: List[Row] = list(done)
    finished = {(r.package, r.config) for r in done}
    for package, config in configs:
        if (package, config) in finished:
            continue
        row, cfg = survey(package, config)
        if row.transformer:
            row = check_in_child(row, cfg, timeout_s, memory_gb, count_flops)
        rows.append(row)
        if progress is not None:
            progress(row)
        if csv_path:
            write_csv(rows, csv_path)
    return rows


def write_csv(rows: Sequence[Row], path: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})


def read_csv(path: str) -> List[Row]:
    kinds = {f.name: f.type for f in fields(Row)}
    rows = []
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            values: Dict[str, Any] = {}
            for name, text in record.items():
                kind = kinds[name]
                if kind == "bool":
                    values[name] = text == "True"
                elif kind in ("float", "Optional[float]"):
                    values[name] = float(text) if text else None
                else:
                    values[name] = text
            rows.append(Row(**values))
    return rows


# --------------------------------------------------------------------------- the page
def markdown(rows: Sequence[Row], command: str, seconds: Optional[float] = None) -> str:
    """docs/coverage.md: per package and backbone type, configs / converted / passing, the
    default rule's GFLOPs ratios, and every transformer row that does not pass, with why."""
    lines = ["# Coverage of the OpenMMLab zoos", "",
             f"Generated by `{command}` (`tools/analysis/zoo_coverage.py`; do not edit by "
             "hand). Every config the installed packages ship outside `_base_`, its backbone "
             "found where the model nests it (" + ", ".join(f"`{p}`" for p in BACKBONE_PATHS)
             + "); each transformer one expedited by `expedite-mm expedite`'s default rule "
             "(docs/tools.md) and checked with random weights in a child process: the stock "
             "state-dict keys, expediting disabled bit-equal to the stock backbone at 160x224 "
             "(or the config's own size where the stock backbone refuses that), "
             "the expedited forward's shapes, and the backbone's fvcore GFLOPs ratio below 1 "
             "at the config's own input size.", ""]
    import importlib.metadata
    walked = sorted({r.package for r in rows})
    versions = ", ".join(f"{p} {importlib.metadata.version(_DISTRIBUTIONS.get(p, p))}"
                         for p in walked)
    lines += [f"Packages walked: {versions}." + (
        f" Walk time: {seconds / 60:.1f} min for {len(rows)} configs on 2 CPU cores (a "
        f"resumed walk counts its kept rows by the time their checks took)."
        if seconds is not None else ""), ""]
    lines += ["| package | configs | transformer backbone | converted | passing |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for package in sorted({r.package for r in rows}) + ["all"]:
        mine = [r for r in rows if package in ("all", r.package)]
        t = [r for r in mine if r.transformer]
        lines.append(f"| {package} | {len(mine)} | {len(t)} | {sum(r.converted for r in t)} | "
                     f"{sum(r.passed for r in t)} |")
    ratios = sorted(r.gflops_ratio for r in rows if r.passed and r.gflops_ratio is not None)
    if ratios:
        middle = len(ratios) // 2
        median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
        lines += ["", f"The default rule's backbone GFLOPs ratio over the {len(ratios)} passing "
                  f"configs: median {median:.3f}, from {ratios[0]:.3f} to {ratios[-1]:.3f}."]
    lines += ["", "## By backbone type (transformers)", "",
              "| package | type | configs | converted | passing | GFLOPs ratio (min-max) |",
              "| --- | --- | ---: | ---: | ---: | --- |"]
    groups: Dict[Tuple[str, str], List[Row]] = {}
    for row in rows:
        if row.transformer:
            groups.setdefault((row.package, row.backbone_type), []).append(row)
    for (package, kind), group in sorted(groups.items(), key=lambda item: (item[0][0],
                                                                           -len(item[1]))):
        ratios = [r.gflops_ratio for r in group if r.passed and r.gflops_ratio is not None]
        span = f"{min(ratios):.3f}-{max(ratios):.3f}" if ratios else ""
        lines.append(f"| {package} | `{kind}` | {len(group)} | "
                     f"{sum(r.converted for r in group)} | {sum(r.passed for r in group)} | "
                     f"{span} |")
    failing = [r for r in rows if r.transformer and not r.passed]
    lines += ["", f"## Transformer configs that do not pass ({len(failing)})", ""]
    if failing:
        lines += ["| package | config | type | why |", "| --- | --- | --- | --- |"]
        lines += [f"| {r.package} | `{r.config}` | `{r.backbone_type}` | "
                  f"{r.reason.replace('|', '/')} |" for r in failing]
    else:
        lines.append("None.")
    others = [r for r in rows if not r.transformer]
    reasons: Dict[str, int] = {}
    for row in others:
        key = row.reason if not row.reason.startswith("does not parse") else "does not parse"
        reasons[key] = reasons.get(key, 0) + 1
    lines += ["", "## Not counted", "",
              "Configs without a transformer backbone: " + "; ".join(
                  f"{why} {n}" for why, n in sorted(reasons.items())) + ".", "",
              "## Backbone types counted as transformers", "",
              ", ".join(f"`{t}`" for t in sorted(TRANSFORMERS)) + ".", ""]
    return "\n".join(lines)
