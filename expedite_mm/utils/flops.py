"""FLOP counting with fvcore, with handles for the ops our layers use.

fvcore counts one fused multiply-add as one flop and silently ignores element-wise ops.
It has no handle for ``embedding_bag`` (our weighted gathers: the clustering M-step and
the reconstruction), so without the handles below those would be skipped; every op
fvcore still cannot count is reported in :attr:`FlopReport.unsupported`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape


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


EXTRA_HANDLES = {
    "aten::embedding_bag": _embedding_bag_flops,
    "aten::_embedding_bag": _embedding_bag_flops,
    "aten::scaled_dot_product_attention": _sdpa_flops,
    "aten::baddbmm": _baddbmm_flops,
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
