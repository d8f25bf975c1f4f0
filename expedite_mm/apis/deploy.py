"""ONNX export of mmseg segmentors (stock or expedited) and ONNX Runtime inference.

What is exported is the network as ``model.forward(inputs, mode='tensor')`` computes it
(``_forward``: backbone, neck, decode head; no data preprocessor, no resize, no argmax),
so a segmentor subclass that overrides ``_forward`` is exported as it runs. The graph
takes the preprocessed image batch ``(B, 3, H, W)`` (normalised, as after the config's
``data_preprocessor``) and returns the head's output. The expedite layers are plain
ONNX ops (MatMul, Gather, ReduceLogSumExp, TopK, ScatterElements, ...): their index
tables depend on the token grid, so ``H x W`` is fixed at export; only the batch may
be dynamic.

Supported: mmseg ``EncoderDecoder`` and its subclasses (e.g. ``DepthEstimator`` and
Segmenter segmentors) with a plain-ViT backbone (mmseg ``VisionTransformer`` and ours
built on it: ``ExpeditedViT``, ``HybridViT`` / ``ExpeditedHybridViT``). Other models are
refused with a ValueError naming what is supported.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..compat import (DYNAMO_ONNX_EXPORTER, DYNAMO_ONNX_EXPORTER_MIN, import_optional,
                     require_torch)

SUPPORTED = ("mmseg EncoderDecoder (or a subclass: DepthEstimator, Segmenter segmentors) "
             "with a ViT backbone (mmseg VisionTransformer, ExpeditedViT, HybridViT, "
             "ExpeditedHybridViT)")
DEFAULT_TOLERANCE = 1e-3   # ||ORT - PyTorch|| / ||PyTorch|| (Verification.rel)


class TensorForward(torch.nn.Module):
    """``model(inputs, mode='tensor')`` as a one-tensor-in, tensors-out module."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        out = self.model(inputs, None, mode="tensor")
        return out if isinstance(out, torch.Tensor) else tuple(out)


def check_exportable(model: torch.nn.Module) -> None:
    """Raise ValueError unless ``model`` is a segmentor this module can export."""
    from mmseg.models.backbones import VisionTransformer
    from mmseg.models.segmentors import EncoderDecoder

    if not isinstance(model, EncoderDecoder):
        raise ValueError(f"cannot export a {type(model).__name__}: supported are {SUPPORTED}")
    if not isinstance(model.backbone, VisionTransformer):
        raise ValueError(f"cannot export a {type(model).__name__} with a "
                         f"{type(model.backbone).__name__} backbone: supported are {SUPPORTED}")


EXPORTERS = ("dynamo", "torchscript")
TORCHSCRIPT_OPSET = 17          # the newest opset torch 2.1's TorchScript exporter writes


def default_exporter() -> str:
    """'dynamo' (the torch.export-based exporter) where this torch has it (>= 2.5, with
    onnxscript installed), else 'torchscript' (torch.onnx's tracing exporter)."""
    return "dynamo" if DYNAMO_ONNX_EXPORTER else "torchscript"


def export_module(module: torch.nn.Module, inputs: torch.Tensor, path: str,
                  exporter: Optional[str] = None, dynamic_batch: bool = False,
                  opset: Optional[int] = None, external_data: bool = False) -> str:
    """Export ``module(inputs)`` (one tensor in) to ONNX at ``path`` with ``exporter``
    (:data:`EXPORTERS`; default :func:`default_exporter`). ``dynamic_batch`` makes dim 0 of
    the input (and of the outputs) symbolic. Returns ``path``.

    Raises:
        ValueError: an unknown ``exporter``.
        RuntimeError: 'dynamo' on a torch without it (naming the torch version).
    """
    exporter = exporter or default_exporter()
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    import_optional("onnx", "deploy", "ONNX export")
    if exporter == "dynamo" and not DYNAMO_ONNX_EXPORTER:
        require_torch(DYNAMO_ONNX_EXPORTER_MIN, "the dynamo ONNX exporter (use exporter="
                      "'torchscript', --exporter torchscript)")
        import_optional("onnxscript", "deploy", "the dynamo ONNX exporter")
    with torch.no_grad(), _quiet_exporter():
        if exporter == "dynamo":
            dynamic_shapes = None
            if dynamic_batch:
                dynamic_shapes = {"inputs": {0: torch.export.Dim("batch", min=1, max=1024)}}
            torch.onnx.export(module, (inputs,), path, dynamo=True, verbose=False,
                              input_names=["inputs"], dynamic_shapes=dynamic_shapes,
                              opset_version=opset, external_data=external_data)
        else:
            outputs = module(inputs)
            count = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
            names = [f"output{i}" for i in range(count)]
            dynamic_axes = ({name: {0: "batch"} for name in ["inputs", *names]}
                            if dynamic_batch else None)
            kwargs = {"dynamo": False} if "dynamo" in _export_parameters() else {}
            torch.onnx.export(module, (inputs,), path, verbose=False, input_names=["inputs"],
                              output_names=names, dynamic_axes=dynamic_axes,
                              opset_version=opset or TORCHSCRIPT_OPSET, **kwargs)
    return path


def _export_parameters() -> Sequence[str]:
    import inspect
    return list(inspect.signature(torch.onnx.export).parameters)


def export_onnx(model: torch.nn.Module, path: str, shape: Tuple[int, int], batch_size: int = 1,
                dynamic_batch: bool = False, opset: Optional[int] = None,
                exporter: Optional[str] = None) -> str:
    """Export ``model`` (eval mode) at input ``(batch_size, 3, H, W)`` to ``path``.

    ``exporter``: 'dynamo' (torch.export-based, the default where torch >= 2.5 has it) or
    'torchscript' (torch.onnx's tracing exporter, what torch 2.1 has); see
    :func:`export_module`. Weights go into the file (or, with the dynamo exporter beyond
    ONNX's 2 GB protobuf limit, into ``path + '.data'`` next to it). Returns ``path``.
    """
    check_exportable(model)
    inputs = torch.randn(batch_size, 3, *shape)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    wrapper = TensorForward(model)
    wrapper.eval()
    return export_module(wrapper, inputs, path, exporter, dynamic_batch, opset,
                         external_data=weights > 1.8 * 2**30)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's and its graph optimiser's progress logs down to errors (restored)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def onnxruntime_session(path: str, threads: Optional[int] = None):
    """A CPU ONNX Runtime session for ``path`` (``threads``: intra-op threads)."""
    ort = import_optional("onnxruntime", "deploy", "ONNX Runtime inference")

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_session(session, inputs: np.ndarray) -> Sequence[np.ndarray]:
    return session.run(None, {session.get_inputs()[0].name: inputs})


@dataclass
class Verification:
    """ONNX Runtime vs PyTorch on one random input, over all outputs.

    ``max_abs``: the largest absolute difference; ``max_rel``: that difference relative to
    the largest absolute PyTorch output; ``rel``: the relative L2 error
    ``||ORT - PyTorch|| / ||PyTorch||``, which the tolerance applies to. The reconstruction's
    top-k is a discrete choice: a token whose k-th and (k+1)-th nearest centres are tied to
    fp32 rounding may pick either under another summation order (ONNX Runtime's, or
    PyTorch's with another thread count), which moves that one token; ``max_rel`` shows
    such a token, ``rel`` weighs it by its share of the output.
    """

    max_abs: float
    max_rel: float
    rel: float
    tolerance: float
    pytorch_s: float
    onnxruntime_s: float

    @property
    def ok(self) -> bool:
        return self.rel <= self.tolerance


def verify(model: torch.nn.Module, path: str, shape: Tuple[int, int], batch_size: int = 1,
           tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
           threads: Optional[int] = None) -> Verification:
    """Run the exported file with ONNX Runtime (CPU) and ``model`` on the same random
    image batch and compare (see :class:`Verification`)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, 3, *shape, generator=generator)
    start = time.perf_counter()
    wrapper = TensorForward(model)
    wrapper.eval()
    with torch.no_grad():
        reference = wrapper(inputs)
    pytorch_s = time.perf_counter() - start
    reference = (reference,) if isinstance(reference, torch.Tensor) else reference
    session = onnxruntime_session(path, threads)
    start = time.perf_counter()
    outputs = run_session(session, inputs.numpy())
    onnxruntime_s = time.perf_counter() - start
    if len(outputs) != len(reference):
        raise RuntimeError(f"the ONNX model returns {len(outputs)} outputs, PyTorch "
                           f"{len(reference)}")
    max_abs = scale = 0.0
    error_sq = norm_sq = 0.0
    for ours, ref in zip(outputs, reference):
        ref = ref.float().numpy().astype(np.float64)
        if ours.shape != ref.shape:
            raise RuntimeError(f"output shape {ours.shape} differs from PyTorch's {ref.shape}")
        difference = ours.astype(np.float64) - ref
        max_abs = max(max_abs, float(np.abs(difference).max()))
        scale = max(scale, float(np.abs(ref).max()))
        error_sq += float((difference ** 2).sum())
        norm_sq += float((ref ** 2).sum())
    return Verification(max_abs, max_abs / max(scale, 1e-12),
                        (error_sq / max(norm_sq, 1e-24)) ** 0.5, tolerance, pytorch_s,
                        onnxruntime_s)


def onnx_op_counts(path: str) -> Dict[str, int]:
    """How often each ONNX op type occurs in the main graph of ``path``."""
    onnx = import_optional("onnx", "deploy", "reading ONNX files")

    graph = onnx.load(path, load_external_data=False).graph
    return dict(Counter(node.op_type for node in graph.node))


def export_config(cfg: Any, path: str, shape: Tuple[int, int], checkpoint: Optional[str] = None,
                  trust_checkpoint: bool = False, batch_size: int = 1,
                  dynamic_batch: bool = False) -> torch.nn.Module:
    """Build the config's model (optionally loaded) and export it; returns the model."""
    from .config import build_model
    model = build_model(cfg, checkpoint, "cpu", trust_checkpoint)
    export_onnx(model, path, shape, batch_size, dynamic_batch)
    return model
