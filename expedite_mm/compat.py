"""The one place that knows which torch (and mmengine) it runs on.

expedite-mm is tested on two stacks (README, "Two tested stacks"): torch 2.1.2 with
mmcv 2.1.0 (the classic lane) and the pinned torch 2.13. What differs between them is
decided here, by feature, so that the rest of the code asks one question and never
compares versions itself:

* :func:`is_compiling` / :func:`is_exporting`: whether dynamo or ``torch.export`` is tracing
  the caller (the operators switch to static shapes then). torch 2.1 has neither
  ``torch.compiler.is_compiling`` nor ``is_exporting``.
* :data:`SAFE_GLOBALS_API`: torch >= 2.6 lets a scope widen the ``weights_only``
  unpickler's allow-list (``torch.serialization.safe_globals``); before that
  :mod:`expedite_mm.apis.checkpoint` unpickles through its own restricted unpickler.
* :data:`DYNAMO_ONNX_EXPORTER`: ``torch.onnx.export(..., dynamo=True)`` (torch >= 2.5 with
  onnxscript installed); without it the TorchScript exporter is used.
* :data:`FULLGRAPH_COMPILE`: the operators compile into one graph (``fullgraph=True``).
* :data:`CPU_HALF_BMM`, :func:`profiler_event_ns`: float16 matrix products on the CPU and
  the profiler's event times, which torch 2.1 lacks / names differently.
* :func:`require_torch`: the error a feature raises on a torch that is too old;
  :func:`import_optional`: the error an optional part raises when its package is missing
  (naming the pip extra).

Importing this module imports torch only (the operators import it). The last section holds
the only uses of other libraries' private fields, where they offer no public API.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from typing import Any, Callable, Dict, Tuple

import torch


def _version(text: str) -> Tuple[int, int, int]:
    """'2.1.2+cu121' -> (2, 1, 2); pre-releases count as their release."""
    numbers = [int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))  # type: ignore[return-value]


TORCH_VERSION: Tuple[int, int, int] = _version(torch.__version__)


def torch_at_least(major: int, minor: int, patch: int = 0) -> bool:
    return TORCH_VERSION >= (major, minor, patch)


def require_torch(minimum: str, feature: str) -> None:
    """Raise a RuntimeError naming ``feature``, the torch it needs and the torch installed,
    unless torch >= ``minimum``."""
    if TORCH_VERSION < _version(minimum):
        raise RuntimeError(f"{feature} needs torch >= {minimum}; this is torch "
                           f"{torch.__version__}. Upgrade torch (see README, 'Two tested "
                           f"stacks').")


# --------------------------------------------------------------------------- tracing
if hasattr(torch.compiler, "is_compiling"):          # torch >= 2.3
    is_compiling: Callable[[], bool] = torch.compiler.is_compiling
else:
    def is_compiling() -> bool:
        """Whether dynamo is tracing the caller (torch < 2.3). Without ``torch._dynamo``
        loaded nothing can be compiling; importing it costs about half a second and
        installs warning filters, so it is not imported here."""
        dynamo = sys.modules.get("torch._dynamo")
        return dynamo is not None and dynamo.is_compiling()

if hasattr(torch.compiler, "is_exporting"):          # torch >= 2.6
    is_exporting: Callable[[], bool] = torch.compiler.is_exporting
else:
    def is_exporting() -> bool:
        """``torch.export`` traces through dynamo before torch 2.6: :func:`is_compiling`
        covers it there."""
        return False

# The operators compile into one graph (no graph break): dynamo of torch >= 2.3 traces the
# tracing predicates above and the tile tables' constant marking; torch 2.1's breaks there.
FULLGRAPH_COMPILE_MIN = "2.3"
FULLGRAPH_COMPILE: bool = torch_at_least(2, 3)


# --------------------------------------------------------------------------- kernels, profiler
def _cpu_half_bmm() -> bool:
    try:
        torch.bmm(torch.zeros(1, 1, 1, dtype=torch.float16), torch.zeros(1, 1, 1, dtype=torch.float16))
    except RuntimeError:                      # torch 2.1: "bmm" not implemented for 'Half'
        return False
    return True


# float16 matrix products on the CPU (torch 2.1 has none; the ops compute those in float32)
CPU_HALF_BMM: bool = _cpu_half_bmm()


def profiler_event_ns(event: Any) -> int:
    """Start time of a profiler (kineto) event in ns: ``start_ns()``, or torch 2.1's
    ``start_us()``."""
    start_ns = getattr(event, "start_ns", None)
    return start_ns() if start_ns is not None else 1000 * event.start_us()


# --------------------------------------------------------------------------- serialization
# torch >= 2.6: torch.serialization.safe_globals (a scope), get_safe_globals, entries given
# as (object, "dotted.name") and weights_only=True by default.
SAFE_GLOBALS_API: bool = torch_at_least(2, 6) and hasattr(torch.serialization, "safe_globals")


# --------------------------------------------------------------------------- ONNX
DYNAMO_ONNX_EXPORTER_MIN = "2.5"


def _dynamo_onnx_exporter() -> bool:
    return torch_at_least(2, 5) and importlib.util.find_spec("onnxscript") is not None


DYNAMO_ONNX_EXPORTER: bool = _dynamo_onnx_exporter()


# --------------------------------------------------------------------------- optional parts
# the pip extra (setup.py) that installs each optional package
EXTRAS = {"mmseg": "seg", "mmdet": "det", "mmpretrain": "pretrain", "fvcore": "flops",
          "onnx": "deploy", "onnxruntime": "deploy", "onnxscript": "deploy"}


def missing_part(package: str, extra: str, feature: str) -> ModuleNotFoundError:
    """The error for ``feature`` when ``package`` is not installed: names the pip extra
    that brings it (setup.py's extras_require)."""
    error = ModuleNotFoundError(
        f"{feature} needs {package}, which is not installed: pip install "
        f"'expedite-mm[{extra}]' (or {package} itself)")
    error.name = package
    return error


def import_optional(module: str, extra: str, feature: str) -> Any:
    """``importlib.import_module(module)``; if its top-level package is not installed, the
    :func:`missing_part` error instead of a bare "No module named ..."."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        package = module.split(".")[0]
        try:
            installed = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            installed = False
        if installed:
            raise                               # installed, but something inside is missing
        raise missing_part(package, extra, feature) from error


# --------------------------------------------------------------------------- private fields
# mmengine offers no public API for the three things below; they are used here only, and
# tests/package/test_compat.py checks on both stacks that the fields are still what we expect.
def checkpoint_schemes() -> Dict[str, Any]:
    """mmengine's table of checkpoint loaders, ``{prefix: loader}``
    (``CheckpointLoader._schemes``). ``CheckpointLoader.register_scheme`` is public, but
    reading which loader a prefix has, to restore it after a scope, is not."""
    from mmengine.runner.checkpoint import CheckpointLoader
    return CheckpointLoader._schemes


def mark_registry_imported(registry: Any) -> None:
    """Make an mmengine ``Registry`` serve what is registered without importing its
    locations again (``Registry._imported``; ``import_from_location`` sets it only after
    every location imported, and without torchvision some of mmpretrain's cannot)."""
    registry._imported = True


def add_config_package(module: str, package: str) -> None:
    """Let mmengine configs resolve ``'<module>::<path>'`` bases from the pip package
    ``package`` (``mmengine.config.utils.MODULE2PACKAGE``, the table behind its
    ``mmseg::``-style lookups; a plugin can only be added to it directly)."""
    from mmengine.config import utils as config_utils
    config_utils.MODULE2PACKAGE.setdefault(module, package)


__all__ = ["TORCH_VERSION", "torch_at_least", "require_torch", "is_compiling", "is_exporting",
           "FULLGRAPH_COMPILE", "FULLGRAPH_COMPILE_MIN", "CPU_HALF_BMM", "profiler_event_ns",
           "SAFE_GLOBALS_API",
           "DYNAMO_ONNX_EXPORTER", "DYNAMO_ONNX_EXPORTER_MIN", "EXTRAS", "missing_part",
           "import_optional", "checkpoint_schemes",
           "mark_registry_imported", "add_config_package"]
