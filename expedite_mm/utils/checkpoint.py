"""Loading official OpenMMLab checkpoints safely on torch >= 2.6.

torch >= 2.6 unpickles with ``weights_only=True`` by default and mmengine 0.10.7 calls
``torch.load`` bare, so official mmseg/mmdet checkpoints whose metadata holds numpy
arrays/scalars or mmengine ``HistoryBuffer``s fail to load. Instead of switching safety
off, :func:`allow_official_checkpoint_types` adds exactly those types to torch's
allow-list (``torch.serialization.add_safe_globals``); anything else is still refused,
with a message naming the explicit opt-in (:func:`checkpoint_policy` ``trust=True`` /
``--trust-checkpoint`` in our tools).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pickle
from typing import Any, Iterator, List, Optional

import numpy as np
import torch


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint holds objects outside the allow-list of safe types."""


def _numpy_globals() -> List[Any]:
    allowed: List[Any] = [np.ndarray, np.dtype]
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["_reconstruct", "scalar"])
        except ImportError:
            continue
        for name in ("_reconstruct", "scalar"):
            fn = getattr(module, name)
            allowed.append((fn, f"{module_name}.{name}"))
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes by class
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling.

    A pickled ``HistoryBuffer`` refers to its statistics methods as
    ``getattr(buffer, 'mean')``; allowing the real ``getattr`` would let a crafted file
    reach arbitrary attributes (and from there, code). Only that one use is allowed.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    is_buffer = obj is HistoryBuffer or isinstance(obj, HistoryBuffer)
    if is_buffer and name in HistoryBuffer._statistics_methods:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"getattr({type(obj).__name__}, {name!r}) is not allowed while loading a checkpoint")


def safe_globals() -> List[Any]:
    """The types official mmseg/mmdet checkpoints hold besides tensors."""
    allowed = _numpy_globals()
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # mmengine is optional for the operators
        return allowed
    return allowed + [HistoryBuffer, bytes, (_history_buffer_getattr, "builtins.getattr")]


_installed = False


def allow_official_checkpoint_types() -> None:
    """Add :func:`safe_globals` to torch's ``weights_only`` allow-list (idempotent)."""
    global _installed
    if not _installed:
        torch.serialization.add_safe_globals(safe_globals())
        _installed = True


@contextlib.contextmanager
def checkpoint_policy(trust: bool = False, source: Optional[str] = None) -> Iterator[None]:
    """Scope for loading checkpoints (e.g. around ``runner.test()``).

    Allow-listed types load with ``weights_only=True``; any other object raises
    :class:`UntrustedCheckpointError` saying how to opt in. ``trust=True`` loads
    everything (``weights_only=False``): only for files you trust, since unpickling
    can run code from the file.
    """
    allow_official_checkpoint_types()
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    if trust:
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    except pickle.UnpicklingError as error:
        # torch's message: a long preamble, then "WeightsUnpickler error: <what>".
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        raise UntrustedCheckpointError(
            f"Refused to load the checkpoint{f' {source}' if source else ''}: it holds objects "
            f"outside the allow-list of safe types (tensors, numpy arrays/scalars, mmengine "
            f"HistoryBuffer): {reason.rstrip('.')}. "
            f"If you trust this file, rerun with --trust-checkpoint (or "
            f"checkpoint_policy(trust=True)) to load it with weights_only=False; unpickling an "
            f"untrusted file can execute arbitrary code.") from error
    finally:
        if trust:
            if previous is None:
                os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


def load_checkpoint_file(filename: str, map_location: Any = "cpu", trust: bool = False) -> Any:
    """Load a checkpoint (local path or any mmengine scheme, e.g. https://) safely."""
    from mmengine.runner.checkpoint import CheckpointLoader
    with checkpoint_policy(trust, source=filename):
        return CheckpointLoader.load_checkpoint(filename, map_location=map_location)


def converter_parser(description: str, source: str) -> argparse.ArgumentParser:
    """The command line shared by our ``tools/model_converters``: ``SRC DST
    [--trust-checkpoint]`` (``source`` names what SRC is, e.g. 'official checkpoint')."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("src", help=f"{source}: path or URL")
    parser.add_argument("dst", help="path of the converted checkpoint")
    parser.add_argument(
        "--trust-checkpoint", action="store_true",
        help="load src with weights_only=False (only for files you trust); by default "
             "only tensors and an allow-list of safe types are unpickled")
    return parser


def save_converted(state_dict: dict, dst: str, meta: dict) -> None:
    """Save converted weights in mmengine's checkpoint layout (``meta`` + ``state_dict``)."""
    directory = os.path.dirname(dst)
    if directory:
        os.makedirs(directory, exist_ok=True)
    torch.save({"meta": meta, "state_dict": state_dict}, dst)
    print(f"converted {len(state_dict)} tensors -> {dst}")
