"""When the expedited backbones are registered into the OpenMMLab registries.

Registration (:func:`register_all_modules`) imports ``expedite_mm.models``, which subclasses
the stock mmseg/mmdet/mmpretrain backbones and registers ours next to them. It must happen
whatever the order of the user's imports, and ``import expedite_mm.ops`` must stay a
pure-torch import. So :func:`activate` (run by ``import expedite_mm``):

* registers at once if mmseg, mmdet or mmpretrain is already imported (or mmengine: a config
  is being read, e.g. ``custom_imports=dict(imports=['expedite_mm'])``);
* otherwise registers right after the first of mmseg / mmdet / mmpretrain has finished
  importing, through a finder on ``sys.meta_path`` that looks at these three names only
  and removes itself once registration is done.

Registration waits until no other of the three is half-way through its own import: mmseg's
models import mmdet and mmpretrain, and registering while mmseg is half-imported would
import it circularly. Importing the three costs seconds (about 5 s on an idle CPU core; the
pure-torch operators about 0.05 s), which is why it is not done eagerly on ``import
expedite_mm``.

mmengine resolves ``_base_ = 'expedite_mm::...'`` through its table of OpenMMLab packages
(``mmengine.config.utils.MODULE2PACKAGE``); ``expedite_mm`` is added to it when mmengine
is (or becomes) imported, so configs shipped with the package (``expedite_mm/.mim/configs``)
can be inherited from a user's project once ``expedite_mm`` has been imported.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence

# the packages whose registries we register into; their import triggers registration
TRIGGERS = ("mmseg", "mmdet", "mmpretrain")
# mmengine's ``PKG::path`` config lookup: module name -> pip name
PACKAGE = ("expedite_mm", "expedite-mm")

_lock = threading.RLock()
_registered: Optional[Dict[str, List[str]]] = None
_registering = False


def _loaded(name: str) -> bool:
    return sys.modules.get(name) is not None     # (None: an import of it is blocked)


def register_all_modules() -> Dict[str, List[str]]:
    """Register the expedited backbones (and the few modules DPT needs) into the ``MODELS``
    etc. registries of every installed OpenMMLab package (mmseg, mmdet, mmpretrain);
    packages that are not installed are skipped. Idempotent.

    Returns:
        ``{package: [registered names]}``.
    """
    global _registered, _registering
    with _lock:
        if _registered is None:
            _registering = True
            try:
                from .models import REGISTERED
                _register_missing_parts()
            finally:
                _registering = False
            _registered = REGISTERED
            _uninstall()
            if _loaded("mmengine"):
                register_config_package()
        return _registered


# what needs mmpretrain besides mmpretrain's own registry: without it these names are
# registered (into mmseg's and mmdet's MODELS) as placeholders whose construction raises
# an error naming the pip extra, instead of mmengine's bare "not in the registry"
NEEDS_MMPRETRAIN = ("ExpeditedSwinV2", "ExpeditedViTSAM", "SAMImageEncoder")


def _placeholder(name: str, package: str) -> type:
    from .utils.compat import EXTRAS, missing_part

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise missing_part(package, EXTRAS[package], f"{name} (expedite-mm)")

    return type(name, (), {"__init__": __init__, "__module__": __name__,
                           "__doc__": f"{name} needs {package}, which is not installed."})


def _register_missing_parts() -> None:
    if importlib.util.find_spec("mmpretrain") is not None:
        return
    for package in ("mmseg", "mmdet"):
        if importlib.util.find_spec(package) is None:
            continue
        registry = importlib.import_module(f"{package}.registry").MODELS
        for name in NEEDS_MMPRETRAIN:
            if name not in registry.module_dict:
                registry.register_module(name=name, module=_placeholder(name, "mmpretrain"))


def register_config_package() -> None:
    """Let mmengine configs inherit ``'expedite_mm::<folder>/<config>.py'`` (the configs
    shipped in ``expedite_mm/.mim/configs``). Needs mmengine imported."""
    from mmengine.config import utils as config_utils
    config_utils.MODULE2PACKAGE.setdefault(*PACKAGE)


def activate() -> None:
    """What ``import expedite_mm`` does: register now if an OpenMMLab package (or mmengine)
    is loaded, else once one is imported (module docstring)."""
    if _loaded("mmengine"):
        register_config_package()
    if any(_loaded(name) for name in TRIGGERS + ("mmengine",)):
        register_all_modules()
    elif any(importlib.util.find_spec(name) is not None for name in TRIGGERS):
        _install()


# --------------------------------------------------------------------------- the finder
class _Depth(threading.local):
    value = 0


_depth = _Depth()


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the top-level modules in :data:`TRIGGERS` (and mmengine) it
    asks the finders after it, and wraps the loader they return so that the module runs as
    usual and registration follows once no other trigger is still importing."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in TRIGGERS and fullname != "mmengine":
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenRegister(spec.loader, fullname)
                return spec
        return None


class _ThenRegister(importlib.abc.Loader):
    """A loader that runs ``loader`` and then registers (and puts ``loader`` back on the
    module, so that nothing sees this wrapper afterwards)."""

    def __init__(self, loader: Any, name: str) -> None:
        self.loader, self.name = loader, name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        _depth.value += 1
        try:
            self.loader.exec_module(module)
        finally:
            _depth.value -= 1
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader
        if self.name == "mmengine":
            register_config_package()
        elif _depth.value == 0 and not _registering and _lock.acquire(blocking=False):
            # (not blocking: another thread registering may wait for this module's import
            # lock, which is held here; its registration covers this package)
            try:
                register_all_modules()
            finally:
                _lock.release()

    def __getattr__(self, name: str) -> Any:       # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


_finder: Optional[_RegisterAfterImport] = None


def _install() -> None:
    global _finder
    with _lock:
        if _finder is None and _registered is None:
            _finder = _RegisterAfterImport()
            sys.meta_path.insert(0, _finder)


def _uninstall() -> None:
    global _finder
    with _lock:
        if _finder is not None:
            if _finder in sys.meta_path:
                sys.meta_path.remove(_finder)
            _finder = None


def waiting() -> bool:
    """Whether registration waits for an OpenMMLab package to be imported."""
    return _finder is not None and _finder in sys.meta_path


__all__ = ["register_all_modules", "register_config_package", "activate", "waiting",
           "TRIGGERS"]
