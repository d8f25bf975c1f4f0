"""FLOP counting with fvcore, with handles for the ops our layers use.

fvcore counts one fused multiply-add as one flop and silently ignores element-wise ops.
It has no handle for ``embedding_bag`` (the reconstruction's weighted gather; the
clustering EM is batched matmuls, which fvcore counts), so without the handles below it
would be skipped; every op fvcore still cannot count is reported in
:attr:`FlopReport.unsupported`. A config's counts, stock and expedited side by side
(:func:`config_flops`), as ``tools/analysis/get_flops.py`` reports them:
:func:`flops_summary`, :func:`print_flops_summary`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..compat import import_optional

import_optional("fvcore.nn", "flops", "FLOP counting (expedite_mm.analysis.flops)")
from fvcore.nn import FlopCountAnalysis  # noqa: E402
from fvcore.nn.jit_handles import get_shape  # noqa: E402


def _embedding_bag_flops(inputs: List[Any], outputs: List[Any]) -> int:
    # aten::embedding_bag(weight (num, C), indices, offsets, ...): one MAC per gathered
    # element of every bag entry (the per-sample weight multiply-add).
    weight, indices = get_shape(inputs[0]), get_shape(inputs[1])
    return int(torch.tensor(indices).prod()) * weight[-1]


def _sdpa_flops(inputs: List[Any], outputs: List[Any]) -> int:
    # q @ k^T and attn @ v: 2 * B * heads * L * S * D multiply-adds
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch = int(torch.tensor(q[:-2]).prod())
    return 2 * batch * q[-2] * k[-2] * q[-1]


def _baddbmm_flops(inputs: List[Any], outputs: List[Any]) -> int:
    # aten::baddbmm(self, batch1 (b, n, m), batch2 (b, m, p))
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


def _matmul_flops(inputs: List[Any], outputs: List[Any]) -> int:
    # aten::matmul(a (..., n, k), b (..., k, m)) with broadcast batch dimensions: one MAC
    # per output element per k. (fvcore's own handle multiplies a's size by m, which
    # misses the batch when a has fewer dimensions than b, e.g. a pooling matrix applied
    # to a batch of token rows; for equal batch shapes the two agree.)
    # (vectors too: the contracted size is a's last either way)
    contracted, out = get_shape(inputs[0])[-1], get_shape(outputs[0])
    return int(torch.tensor(out, dtype=torch.int64).prod()) * contracted


def _scatter_add_flops(inputs: List[Any], outputs: List[Any]) -> int:
    # aten::scatter_add(self, dim, index, src): one addition per element of src (the
    # ToMe-style merge of tokens into their matches).
    return int(torch.tensor(get_shape(inputs[3])).prod())


EXTRA_HANDLES = {
    "aten::embedding_bag": _embedding_bag_flops,
    "aten::scatter_add": _scatter_add_flops,
    "aten::_embedding_bag": _embedding_bag_flops,
    "aten::scaled_dot_product_attention": _sdpa_flops,
    "aten::baddbmm": _baddbmm_flops,
    "aten::matmul": _matmul_flops,
}


@dataclass
class FlopReport:
    total: int
    by_module: Dict[str, int]
    unsupported: Counter = field(default_factory=Counter)

    def module(self, name: str) -> int:
        return self.by_module.get(name, 0)


def count_flops(model: torch.nn.Module, inputs: Tuple) -> FlopReport:
    """fvcore flop count of ``model(*inputs)`` (traced with ``torch.jit``)."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    with torch.no_grad():
        total = analysis.total()
    return FlopReport(total, dict(analysis.by_module()), Counter(analysis.unsupported_ops()))


class _TensorForward(torch.nn.Module):
    """The network without post-processing (``model._forward(x, samples)``; the logits of
    a classifier) as a module taking one tensor and returning a flat tuple of tensors, so
    fvcore can trace it."""

    def __init__(self, model: torch.nn.Module, data_samples: List[Any]) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        from ..apis.config import flatten_outputs, tensor_forward
        return flatten_outputs(tensor_forward(self.model, inputs, self.data_samples))


class _BackboneForward(torch.nn.Module):
    """A backbone's outputs as a flat tuple; with the logits placement the centre maps of
    ``forward_with_state`` (its plain ``forward`` refuses: only a segmentor reconstructs)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        from ..apis.config import flatten_outputs
        if getattr(self.backbone, "reconstructs_logits", False):
            return flatten_outputs(self.backbone.forward_with_state(inputs)[0])
        return flatten_outputs(self.backbone(inputs))


EXPEDITE_LAYERS = ("clustering", "reconstruction")


@dataclass
class ModelFlops:
    """fvcore counts of one model: whole network (None if it cannot be traced), backbone,
    and how much of the backbone the clustering/reconstruction layers take."""

    whole: Optional[int]
    backbone: int
    expedite_ops: int
    unsupported: Counter
    note: str = ""
    #: per module, by the model's own module names (``'backbone.layers.3'``); the modules
    #: of the backbone only when the whole model was not counted
    by_module: Dict[str, int] = field(default_factory=dict)


def model_flops(model: torch.nn.Module, shape: Tuple[int, int],
                backbone_only: bool = False) -> ModelFlops:
    """Count ``model`` (an mmseg/mmdet model or an mmpretrain classifier) on a random
    ``(1, 3, H, W)`` input.

    The whole network is traced through ``model._forward`` (as mmseg/mmdet's own FLOP
    tools do: no post-processing, no sliding window; a classifier to its logits); with
    ``backbone_only`` (large
    detectors at large inputs) or where a head cannot be traced, only the backbone is
    counted, and ``note`` says why. With the logits placement the segmentor reconstructs
    the head's logits with the backbone's reconstruction layer: that work is in the whole
    model and in ``expedite_ops``, not in ``backbone`` (the backbone's own forward).
    """
    from ..apis.config import synthetic_batch
    inputs, samples = synthetic_batch(model, shape)
    note = "backbone only (--backbone-only)" if backbone_only else ""
    report = None
    if not backbone_only:
        try:
            report = count_flops(_TensorForward(model, samples), (inputs,))
        except Exception as error:  # noqa: BLE001 - any tracing failure of a head
            note = f"whole model not traceable ({type(error).__name__}: {str(error)[:120]})"
    if report is not None:
        prefix, whole = "model.backbone", report.total
    else:
        report = count_flops(_BackboneForward(model.backbone), (inputs,))
        prefix, whole = "", None
    backbone = report.module(prefix) if prefix else report.total
    if prefix and getattr(model.backbone, "reconstructs_logits", False):
        backbone -= report.module(f"{prefix}.reconstruction")   # called by the segmentor
    expedite = sum(flops for name, flops in report.by_module.items()
                   if name.startswith(prefix) and _is_expedite_layer(name))
    # the wrappers hold the model as .model (whole) or the backbone as .backbone
    strip = "model." if prefix else ""
    by_module = {name[len(strip):]: flops for name, flops in report.by_module.items()
                 if name.startswith(strip) and len(name) > len(strip)}
    return ModelFlops(whole, backbone, expedite, report.unsupported, note, by_module)


def _is_expedite_layer(name: str) -> bool:
    """``...clustering`` / ``...reconstruction`` modules (outermost only, no double count)."""
    parts = name.split(".")
    layers = [p in EXPEDITE_LAYERS for p in parts]
    return layers[-1] and sum(layers) == 1


def config_flops(cfg: Any, shape: Optional[Tuple[int, int]] = None,
                 backbone_only: bool = False) -> Dict[str, Any]:
    """fvcore GFLOPs of a config, expedited and with expediting disabled, side by side.

    Returns ``{'shape', 'expedited': ModelFlops, 'stock': ModelFlops,
    'ratio_whole', 'ratio_backbone'}`` (ratios are expedited / stock).
    """
    from ..apis.config import build_model, default_input_shape, disable_expedite, load_config
    cfg = load_config(cfg)
    shape = tuple(shape) if shape else default_input_shape(cfg)
    result: Dict[str, Any] = {"shape": shape}
    for name, variant in (("stock", disable_expedite(cfg)), ("expedited", cfg)):
        model = build_model(variant)
        result[name] = model_flops(model, shape, backbone_only)
        del model
    stock, ours = result["stock"], result["expedited"]
    result["ratio_backbone"] = ours.backbone / stock.backbone
    result["ratio_whole"] = (ours.whole / stock.whole
                             if ours.whole is not None and stock.whole else None)
    return result


def flops_summary(config: str, result: Dict[str, Any]) -> Dict[str, Any]:
    """:func:`config_flops`'s result as ``tools/analysis/get_flops.py`` reports it: GFLOPs
    of the whole network and the backbone (None where not counted), stock and expedited,
    the clustering + reconstruction layers' share, the ratios, the ops fvcore skipped.

    Args:
        config: the config's name (as the summary shows it).
        result: :func:`config_flops`'s result.
    """
    stock, ours = result["stock"], result["expedited"]
    g = lambda flops: None if flops is None else flops / 1e9  # noqa: E731
    return {
        "config": config, "shape": list(result["shape"]),
        "stock": {"whole_gflops": g(stock.whole), "backbone_gflops": g(stock.backbone)},
        "expedited": {"whole_gflops": g(ours.whole), "backbone_gflops": g(ours.backbone),
                      "clustering_reconstruction_gflops": g(ours.expedite_ops)},
        "ratio_whole": result["ratio_whole"], "ratio_backbone": result["ratio_backbone"],
        "unsupported_ops": dict(ours.unsupported + stock.unsupported),
        "note": ours.note or stock.note,
    }


def print_flops_summary(summary: Dict[str, Any]) -> None:
    """:func:`flops_summary`'s summary as a table (rich), with its note and the ops fvcore
    did not count.

    Args:
        summary: :func:`flops_summary`'s summary.
    """
    from rich.console import Console
    from rich.table import Table

    fmt = lambda v, spec=".1f": "n/a" if v is None else format(v, spec)  # noqa: E731
    h, w = summary["shape"]
    table = Table(title=f"fvcore GFLOPs at {h}x{w}: {summary['config']}")
    for column in ("", "stock", "expedited", "expedited / stock"):
        table.add_column(column, justify="right")
    for part in ("whole", "backbone"):
        table.add_row(part, fmt(summary["stock"][f"{part}_gflops"]),
                      fmt(summary["expedited"][f"{part}_gflops"]),
                      fmt(summary[f"ratio_{part}"], ".3f"))
    table.add_row("of which clustering + reconstruction", "",
                  fmt(summary["expedited"]["clustering_reconstruction_gflops"], ".2f"), "")
    console = Console(width=110)
    console.print(table)
    if summary["note"]:
        console.print(f"note: {summary['note']}")
    if summary["unsupported_ops"]:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(summary["unsupported_ops"].items()))
        console.print(f"not counted by fvcore (element-wise or indexing ops): {ops}")
