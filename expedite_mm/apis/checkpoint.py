"""Loading checkpoints safely, by every path our tools take, and loudly when they do not fit.

torch >= 2.6 unpickles with ``weights_only=True`` by default, but mmengine 0.10.7 fetches
``http(s)://`` (and ``open-mmlab://``, ``torchvision://``, ``mmcls://``) checkpoints with
``torch.hub.load_state_dict_from_url``, which passes ``weights_only=False``: a URL would
run any code its pickle holds. Inside :func:`checkpoint_policy` every source goes through
one loader instead (mmengine's ``CheckpointLoader`` schemes are routed to it for the
duration of the scope): URLs are downloaded to torch's hub cache exactly where mmengine
puts them, then local, downloaded and cached files alike are unpickled by
:func:`torch.load` with ``weights_only=True`` and an allow-list of the types official
OpenMMLab checkpoints hold besides tensors (numpy arrays/scalars/dtypes, mmengine
``HistoryBuffer``). The allow-list, too, is only active inside the scope: importing
``expedite_mm`` changes nothing process-wide.

Mistakes are errors, each naming the file: :class:`UntrustedCheckpointError` (objects
outside the allow-list, with torch's reason; ``--trust-checkpoint`` /
``checkpoint_policy(trust=True)`` loads it with ``weights_only=False``),
:class:`CorruptCheckpointError` (empty, truncated, random bytes, an HTML page) and
:class:`CheckpointMismatchError` (:func:`load_state_dict_checked`: missing or unexpected
keys and shape mismatches, unless a partial load is asked for).

torch before 2.6 cannot widen its ``weights_only`` allow-list for a scope (torch 2.1's is a
fixed list of torch types, and its unpickler builds no numpy array). There the same
allow-list is enforced by :class:`RestrictedUnpickler`, handed to :func:`torch.load` as its
``pickle_module``: every global a file names is looked up in the allow-list (torch's own
tensor-rebuilding functions and types, plus :func:`safe_globals`) and anything else is
refused before it is imported, so nothing outside the list can be called or built. Nothing
is loaded with safety off unless ``trust`` is given.

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment is refused (a
:class:`CheckpointError` when a scope is entered without ``trust``): it is process-wide and
inherited, so it does not say which file is trusted; honoured, it would unpickle every URL
a config names with ``weights_only=False``, and a warning in a long log is easily missed.
``--trust-checkpoint`` is the explicit, per-run opt-in.
"""
from __future__ import annotations

import _compat_pickle
import contextlib
import contextvars
import io
import logging
import os
import os.path as osp
import pickle
import re
import struct
import sys
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch

from ..compat import SAFE_GLOBALS_API, checkpoint_schemes

FORCE_UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_TRUE_VALUES = ("1", "y", "yes", "true")      # what torch.load accepts as set
_SHOWN_KEYS = 5                               # keys named per kind of mismatch
_ALLOWED_TYPES = "tensors, numpy arrays/scalars, mmengine HistoryBuffer"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded as asked (base of the errors below)."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint holds objects outside the allow-list of safe types."""


class CorruptCheckpointError(CheckpointError):
    """A file is not a readable checkpoint: empty, truncated, or not one at all."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's weights do not fit the model (missing/unexpected keys, shapes)."""


# --------------------------------------------------------------------------- allow-list
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


# HistoryBuffer's own statistics (mmengine registers them when the first buffer is built;
# a fresh process loading a checkpoint may not have built one yet).
_HISTORY_BUFFER_STATISTICS = ("min", "max", "current", "mean")


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling.

    A pickled ``HistoryBuffer`` refers to its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; allowing the real ``getattr`` would let a crafted
    file reach arbitrary attributes (and from there, code). Only that one use is allowed:
    the class itself, and a name of one of its own statistics functions.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    own = HistoryBuffer.__dict__.get(name)
    registered = HistoryBuffer._statistics_methods.get(name)
    if obj is HistoryBuffer and callable(own) and not isinstance(own, (classmethod, staticmethod)) \
            and (name in _HISTORY_BUFFER_STATISTICS or registered is own):
        return own
    raise pickle.UnpicklingError(
        f"getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}) is not allowed "
        f"while loading a checkpoint")


def safe_globals() -> List[Any]:
    """The types official mmseg/mmdet checkpoints hold besides tensors."""
    allowed = _numpy_globals()
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # mmengine is optional for the operators
        return allowed
    return allowed + [HistoryBuffer, bytes, (_history_buffer_getattr, "builtins.getattr")]


@contextlib.contextmanager
def allowed_checkpoint_types() -> Iterator[None]:
    """Scope in which torch's ``weights_only`` unpickler also accepts :func:`safe_globals`
    (``torch.serialization.safe_globals``; entries already allowed are left alone).

    On torch < 2.6 torch's list cannot be widened: the scope changes nothing there, and
    our loaders unpickle through :class:`RestrictedUnpickler` instead."""
    if not SAFE_GLOBALS_API:
        yield
        return
    present = set(torch.serialization.get_safe_globals())
    with torch.serialization.safe_globals([g for g in safe_globals() if g not in present]):
        yield


def allow_official_checkpoint_types() -> None:
    """Add :func:`safe_globals` to torch's allow-list for the rest of the process.

    Our tools never call this (they load inside :func:`checkpoint_policy`); it is for
    scripts that load official checkpoints through other code, e.g. mmseg's own
    ``tools/test.py`` with our configs, and chose to widen the list for the process.

    Raises:
        RuntimeError: on torch < 2.6, whose allow-list cannot be widened (load through
            :func:`load_checkpoint_file` or inside :func:`checkpoint_policy` there).
    """
    if not SAFE_GLOBALS_API:
        raise RuntimeError(
            f"allow_official_checkpoint_types() needs torch >= 2.6 "
            f"(torch.serialization.add_safe_globals); this is torch {torch.__version__}. "
            f"Load through expedite_mm.apis.checkpoint.load_checkpoint_file, or inside "
            f"checkpoint_policy() (our tools do), which are safe on every torch.")
    present = set(torch.serialization.get_safe_globals())
    torch.serialization.add_safe_globals([g for g in safe_globals() if g not in present])


# --------------------------------------------------------------------------- torch < 2.6
# torch's own weights_only types (torch 2.1's list, by name: the functions and types a
# torch.save of tensors, parameters and state dicts refers to), for RestrictedUnpickler.
_TORCH_GLOBALS = (
    "collections.OrderedDict", "torch.nn.parameter.Parameter", "torch.Size", "torch.Tensor",
    "torch.serialization._get_layout", "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_meta_tensor_no_storage",
    # bytes pickled with protocol 2 (torch.save's default), e.g. inside numpy scalars
    "_codecs.encode",
)


def _resolve(dotted: str) -> Optional[Any]:
    module_name, _, name = dotted.rpartition(".")
    module = sys.modules.get(module_name) or __import__(module_name, fromlist=[name])
    return getattr(module, name, None)


def _restricted_allow_list() -> Dict[str, Any]:
    """``{"module.name": object}``: torch's own types and :func:`safe_globals`."""
    allowed: Dict[str, Any] = {}
    for dotted in _TORCH_GLOBALS:
        found = _resolve(dotted)
        if found is not None:
            allowed[dotted] = found
    for name in dir(torch):                     # torch.float32, torch.strided, ...
        value = getattr(torch, name, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            allowed[f"torch.{name}"] = value
    for entry in safe_globals():
        if isinstance(entry, tuple):
            value, dotted = entry
        else:
            value, dotted = entry, f"{entry.__module__}.{entry.__qualname__}"
        allowed[dotted] = value
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """The ``weights_only`` allow-list for torch < 2.6: an unpickler that resolves only the
    globals of :func:`_restricted_allow_list` (the standard way to restrict pickle: every
    callable or class a pickle can reach is looked up through ``find_class``). Storages are
    resolved by torch's own wrapper before ``find_class`` is asked."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 (torch.save's default) names builtins as Python 2 did (__builtin__);
        # pickle maps them back in the find_class this one replaces
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        dotted = f"{module}.{name}"
        allowed = _restricted_allow_list()
        if dotted in allowed:
            return allowed[dotted]
        raise pickle.UnpicklingError(
            f"Unsupported global: GLOBAL {dotted} is blocked: it is not in the allow-list "
            f"of safe types")


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# what torch.load uses of its pickle_module (torch < 2.6): Unpickler, load, __name__
restricted_pickle = type(sys)("expedite_mm_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load


# --------------------------------------------------------------------------- policy scope
_TRUST: contextvars.ContextVar[Optional[bool]] = contextvars.ContextVar(
    "expedite_mm_checkpoint_trust", default=None)


@contextlib.contextmanager
def checkpoint_policy(trust: bool = False, source: Optional[str] = None) -> Iterator[None]:
    """Scope for loading checkpoints (e.g. around ``runner.test()``).

    Inside it, every mmengine checkpoint source (``CheckpointLoader``: local paths,
    ``http(s)://``, ``open-mmlab://``, ``torchvision://``, ``mmcls://``, ``s3://``) loads
    through :func:`torch.load` with ``weights_only=True`` and the allow-list of
    :func:`safe_globals`; any other object raises :class:`UntrustedCheckpointError`
    saying how to opt in. ``trust=True`` loads everything (``weights_only=False``): only
    for files you trust, since unpickling can run code from the file.

    Raises:
        CheckpointError: ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set and ``trust`` is not.
    """
    _refuse_unsafe_environment(trust, source)
    token = _TRUST.set(bool(trust))
    saved = _route_checkpoint_schemes()
    try:
        with allowed_checkpoint_types():
            yield
    except pickle.UnpicklingError as error:
        # a torch.load we do not route (e.g. a scheme registered by another package)
        raise _classify_load_error(error, _describe(source), trust) from error
    finally:
        _restore_checkpoint_schemes(saved)
        _TRUST.reset(token)


def _refuse_unsafe_environment(trust: bool, source: Optional[str]) -> None:
    value = os.environ.get(FORCE_UNSAFE_ENV, "")
    if trust or value.lower() not in _TRUE_VALUES:
        return
    raise CheckpointError(
        f"{FORCE_UNSAFE_ENV}={value} is set in the environment: it makes torch unpickle "
        f"checkpoints with weights_only=False, which runs any code a file holds. expedite-mm "
        f"does not honour it, since it does not say which file you trust. Unset it; if you "
        f"trust {source or 'the checkpoint'}, pass --trust-checkpoint "
        f"(checkpoint_policy(trust=True) in Python).")


def _trusted() -> bool:
    return bool(_TRUST.get())


# --------------------------------------------------------------------------- loading
def _describe(source: Optional[str], path: Optional[str] = None) -> str:
    if source is None:
        return f"checkpoint {path}" if path else "checkpoint"
    if path is not None and path != source:
        return f"checkpoint {source} (at {path})"
    return f"checkpoint {source}"


def torch_load_checked(file: Union[str, io.BytesIO], map_location: Any = "cpu",
                       source: Optional[str] = None, cached: bool = False) -> Any:
    """:func:`torch.load` under the current policy (default: not trusted), with errors
    that name the file and say what is wrong.

    Args:
        file: a local path or an in-memory file.
        map_location: as for :func:`torch.load`.
        source: what the user gave (path or URL), for messages; default ``file``.
        cached: ``file`` is a download in torch's hub cache (messages say to delete it).

    Raises:
        CorruptCheckpointError: empty, truncated, or not a torch checkpoint.
        UntrustedCheckpointError: objects outside the allow-list (not trusted).
    """
    path = file if isinstance(file, str) else None
    where = _describe(source if source is not None else path, path)
    size = os.path.getsize(file) if path is not None else file.getbuffer().nbytes
    advice = " Delete it from the cache to download it again." if cached else ""
    if size == 0:
        raise CorruptCheckpointError(f"The {where} is empty (0 bytes).{advice}")
    trust = _trusted()
    # torch's opposite override wins over weights_only=False: then nothing is trusted
    forced_safe = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "").lower() in _TRUE_VALUES
    try:
        if trust or SAFE_GLOBALS_API or forced_safe:
            with allowed_checkpoint_types():
                return torch.load(file, map_location=map_location, weights_only=not trust)
        # torch < 2.6 (its forced weights_only refuses a pickle_module: torch's list then)
        return torch.load(file, map_location=map_location, weights_only=False,
                          pickle_module=restricted_pickle)
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError, IndexError,
            struct.error, zipfile.BadZipFile) as error:
        if isinstance(error, RuntimeError) and "map_location" in str(error):
            raise  # e.g. CUDA tensors on a CPU-only machine: not the file's fault
        classified = _classify_load_error(error, where, trust and not forced_safe)
        if isinstance(classified, CorruptCheckpointError) and advice:
            classified = CorruptCheckpointError(f"{classified}{advice}")
        raise classified from error


# torch's weights_only unpickler refusing a type or a call (as opposed to bytes that are no
# pickle at all: "Unsupported operand", "String is too long", ...)
_REFUSAL = re.compile(r"GLOBAL |is not allowed while loading|Can only (create new object|build)|"
                      r"call reduce for unrecognized|must be imported to load|"
                      r"weights_only=True`` with|Unsupported class |instantiate unsupported")


def _torch_reason(error: BaseException) -> str:
    """torch's own reason, without the preamble its weights_only message wraps it in."""
    inner = error.__context__
    if isinstance(error, pickle.UnpicklingError) and isinstance(inner, pickle.UnpicklingError):
        error = inner          # torch re-raises "Weights only load failed..." from None
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:")[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return reason if isinstance(error, (pickle.UnpicklingError, RuntimeError)) \
        else f"{type(error).__name__}: {reason}"


def _classify_load_error(error: BaseException, where: str, trust: bool) -> CheckpointError:
    reason = _torch_reason(error).rstrip(".")
    if not trust and _REFUSAL.search(reason):
        return UntrustedCheckpointError(
            f"Refused to load the {where}: it holds objects outside the allow-list of safe "
            f"types ({_ALLOWED_TYPES}); torch says: {reason}. If you trust this file, rerun "
            f"with --trust-checkpoint (checkpoint_policy(trust=True) in Python) to load it "
            f"with weights_only=False; unpickling an untrusted file can execute arbitrary code.")
    return CorruptCheckpointError(
        f"Cannot read the {where}: it is not a readable torch checkpoint (a truncated or "
        f"corrupt file, or no checkpoint at all, e.g. an HTML error page); torch says: {reason}.")


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """A local file (mmengine's default scheme)."""
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint {filename} not found (no such file)")
    return torch_load_checked(path, map_location, source=filename)


def _hub_cache_path(url: str) -> str:
    """Where torch hub / mmengine keep a downloaded checkpoint: <hub dir>/checkpoints/NAME."""
    name = osp.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"checkpoint URL {url} does not end with a file name")
    return osp.join(torch.hub.get_dir(), "checkpoints", name)


def _download(url: str, path: str) -> None:
    if osp.exists(path):
        return
    os.makedirs(osp.dirname(path), exist_ok=True)
    sys.stderr.write(f'Downloading: "{url}" to {path}\n')
    # writes a temporary file and renames it: an interrupted download leaves no file
    torch.hub.download_url_to_file(url, path, progress=os.isatty(0))


def load_from_http(url: str, map_location: Any = None) -> Any:
    """An ``http(s)://`` checkpoint, downloaded once into torch's hub cache (rank 0 first
    when distributed, as mmengine does), then loaded like a local file."""
    from mmengine.dist import get_dist_info
    path = _hub_cache_path(url)
    rank, world_size = get_dist_info()
    if rank == 0:
        _download(url, path)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            _download(url, path)
    return torch_load_checked(path, map_location, source=url, cached=True)


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: mmengine's model-zoo table."""
    from mmengine.logging import print_log
    from mmengine.runner import checkpoint as mm_checkpoint
    prefix, name = filename.split("://", 1)
    deprecated = mm_checkpoint.get_deprecated_model_names()
    if name in deprecated:
        print_log(f"{prefix}://{name} is deprecated in favor of {prefix}://{deprecated[name]}",
                  logger="current", level=logging.WARNING)
        name = deprecated[name]
    models = mm_checkpoint.get_external_models()
    if name not in models:
        raise ValueError(f"{filename}: no model {name!r} in mmengine's {prefix}:// table")
    url = models[name]
    if url.startswith(("http://", "https://")):
        return load_from_http(url, map_location)
    return load_from_local(osp.join(mm_checkpoint._get_mmengine_home(), url), map_location)


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` (``modelzoo://`` is its deprecated spelling)."""
    from mmengine.runner import checkpoint as mm_checkpoint
    return load_from_http(mm_checkpoint.get_torchvision_models()[filename.split("://", 1)[1]],
                          map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME``: an mmcls ImageNet model, as its backbone's weights."""
    from mmengine.runner import checkpoint as mm_checkpoint
    url = mm_checkpoint.get_mmcls_models()[filename.split("://", 1)[1]]
    return mm_checkpoint._process_mmcls_checkpoint(load_from_http(url, map_location))


def load_from_ceph(filename: str, map_location: Any = None) -> Any:
    """``s3://`` / ``petrel://`` through mmengine's petrel file backend."""
    from mmengine.fileio import get_file_backend
    backend = get_file_backend(filename, backend_args={"backend": "petrel"})
    return torch_load_checked(io.BytesIO(backend.get(filename)), map_location, source=filename)


def load_from_pavi(filename: str, map_location: Any = None) -> Any:
    """``pavi://`` on torch < 2.6, where mmengine's loader (a bare ``torch.load``) would
    unpickle with ``weights_only=False``: only when trusted."""
    if not _trusted():
        raise UntrustedCheckpointError(
            f"Refused to load the checkpoint {filename}: mmengine loads pavi:// files with "
            f"torch.load's default, which on torch {torch.__version__} (< 2.6) is "
            f"weights_only=False. If you trust this file, rerun with --trust-checkpoint "
            f"(checkpoint_policy(trust=True) in Python).")
    from mmengine.runner.checkpoint import load_from_pavi as mmengine_load_from_pavi
    return mmengine_load_from_pavi(filename, map_location)


# mmengine's scheme prefixes -> our loader. mmengine's own loaders for these call
# torch.load bare or torch.hub with weights_only=False; pavi:// (SenseTime-internal) is
# left to mmengine where torch.load's default is weights_only (torch >= 2.6: then it gets
# the allow-list of the scope), and refused unless trusted before.
_ROUTES: Sequence[Tuple[Tuple[str, ...], Callable]] = (
    (("",), load_from_local),
    (("http://", "https://"), load_from_http),
    (("open-mmlab://", "openmmlab://"), load_from_openmmlab),
    (("modelzoo://", "torchvision://"), load_from_torchvision),
    (("mmcls://",), load_from_mmcls),
    ((r"(\S+\:)?s3://", r"(\S+\:)?petrel://"), load_from_ceph),
)


def _routes() -> Sequence[Tuple[Tuple[str, ...], Callable]]:
    return _ROUTES if SAFE_GLOBALS_API else (*_ROUTES, (("pavi://",), load_from_pavi))


def _route_checkpoint_schemes() -> Dict[str, Optional[Callable]]:
    from mmengine.runner.checkpoint import CheckpointLoader
    schemes = checkpoint_schemes()
    saved = {}
    for prefixes, loader in _routes():
        for prefix in prefixes:
            saved[prefix] = schemes.get(prefix)
        CheckpointLoader.register_scheme(list(prefixes), loader, force=True)
    return saved


def _restore_checkpoint_schemes(saved: Dict[str, Optional[Callable]]) -> None:
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, loader in saved.items():
        if loader is None:
            checkpoint_schemes().pop(prefix, None)
        else:
            CheckpointLoader.register_scheme(prefix, loader, force=True)


def load_checkpoint_file(filename: str, map_location: Any = "cpu", trust: bool = False) -> Any:
    """Load a checkpoint (a local path or any mmengine scheme, e.g. ``https://``) safely.

    Raises:
        UntrustedCheckpointError, CorruptCheckpointError, FileNotFoundError: see above.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    with checkpoint_policy(trust, source=filename):
        return CheckpointLoader.load_checkpoint(filename, map_location=map_location)


# --------------------------------------------------------------------------- into a model
def extract_state_dict(checkpoint: Any, source: Optional[str] = None) -> Mapping[str, Any]:
    """The weights of a checkpoint: ``checkpoint['state_dict']`` or the checkpoint itself
    (mmengine's convention)."""
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) \
        else checkpoint
    if not isinstance(state_dict, Mapping):
        raise CheckpointMismatchError(
            f"The {_describe(source)} holds no state dict: expected a dict of named tensors or "
            f"a dict with 'state_dict' holding one, got {describe_payload(state_dict)}")
    return state_dict


def describe_payload(obj: Any) -> str:
    """A few words on what a checkpoint file holds, for error messages."""
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    if isinstance(obj, Mapping):
        return f"a dict with keys {list(obj)[:_SHOWN_KEYS]}"
    return f"a {type(obj).__name__}"


def _load_collecting(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                     assign: bool = False) -> Tuple[List[str], List[str], List[str]]:
    """``model.load_state_dict(state_dict, strict=False, assign=assign)`` (the model's own
    load hooks run, e.g. position tables resized or re-initialised), returning what did not
    fit: missing keys, unexpected keys, and torch's message per tensor it could not copy
    (shapes)."""
    seen: Dict[str, List[str]] = {}

    def capture(module, incompatible) -> None:   # runs last, with the final lists
        seen["missing"] = list(incompatible.missing_keys)
        seen["unexpected"] = list(incompatible.unexpected_keys)

    handle = model.register_load_state_dict_post_hook(capture)
    errors: List[str] = []
    try:
        model.load_state_dict(state_dict, strict=False, assign=assign)
    except RuntimeError as error:     # raised after every tensor that fits was copied
        if "missing" not in seen:
            raise
        errors = [_shorten(line) for line in str(error).split("\n\t")[1:] if line.strip()]
    finally:
        handle.remove()
    return seen["missing"], seen["unexpected"], errors


_SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape "
                            r"torch\.Size\(\[(.*)\]\) from checkpoint, the shape in current "
                            r"model is torch\.Size\(\[(.*)\]\)")


def _shorten(message: str) -> str:
    """torch's "size mismatch for KEY: ..." as "KEY: checkpoint (..) vs model (..)"."""
    match = _SIZE_MISMATCH.search(message)
    if match is None:
        return message.strip().rstrip(".")
    key, ours, theirs = match.groups()
    return f"{key}: checkpoint ({ours}) vs model ({theirs})"


def load_state_dict_checked(model: torch.nn.Module, checkpoint: Any,
                            allow_partial: bool = False, source: Optional[str] = None,
                            revise_keys: Sequence[Tuple[str, str]] = ((r"^module\.", ""),),
                            assign: bool = False) -> Dict[str, List[str]]:
    """Load a checkpoint's weights into ``model``; anything that does not fit is an error.

    Like mmengine's ``load_checkpoint`` (``state_dict`` key or the bare dict; DDP's
    ``module.`` prefix stripped; ``num_batches_tracked`` may be missing; keys the model's
    own load hooks drop from the file are not missing), but missing keys, unexpected keys
    and shape mismatches raise unless ``allow_partial`` (then they are logged, and the
    mismatched tensors keep their initial values). ``assign=True`` makes the model hold the
    given tensors instead of copies (``torch.nn.Module.load_state_dict``'s ``assign``).

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": [...]}`` (empty lists if
        everything fit).

    Raises:
        CheckpointMismatchError: naming the first keys of each kind (the tensors that fit
            have been copied already).
    """
    state_dict = extract_state_dict(checkpoint, source)
    revised = OrderedDict(state_dict)
    for pattern, replacement in revise_keys:
        revised = OrderedDict((re.sub(pattern, replacement, k), v) for k, v in revised.items())
    revised._metadata = getattr(state_dict, "_metadata", OrderedDict())  # module versions
    missing, unexpected, mismatched = _load_collecting(model, revised, assign)
    report = {"missing": [k for k in missing
                          if not k.endswith("num_batches_tracked") and k not in revised],
              "unexpected": unexpected, "mismatched": mismatched}
    if any(report.values()):
        message = _mismatch_message(model, report, source)
        if not allow_partial:
            raise CheckpointMismatchError(
                f"{message}. Use the checkpoint made for this config, or pass "
                f"--allow-partial-load (allow_partial=True) to load only what fits.")
        from mmengine.logging import print_log
        print_log(f"{message} (partial load allowed: the rest keeps its initial values)",
                  logger="current", level=logging.WARNING)
    return report


def _mismatch_message(model: torch.nn.Module, report: Dict[str, List[str]],
                      source: Optional[str]) -> str:
    parts = []
    for kind, label in (("missing", "missing from the checkpoint"),
                        ("unexpected", "not in the model"), ("mismatched", "shape mismatch")):
        items = report[kind]
        if items:
            shown = "; ".join(items[:_SHOWN_KEYS]) if kind == "mismatched" \
                else ", ".join(items[:_SHOWN_KEYS])
            more = f" and {len(items) - _SHOWN_KEYS} more" if len(items) > _SHOWN_KEYS else ""
            parts.append(f"{len(items)} {label}: {shown}{more}")
    return (f"The {_describe(source)} does not fit the model ({type(model).__name__}): "
            + " | ".join(parts))
