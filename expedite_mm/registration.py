"""When the expedited backbones are registered into the OpenMMLab registries.

Registration (:func:`register_all_modules`) is the one list of what the project registers:
every row of the family table (:mod:`expedite_mm.models.families`) whose packages are
installed, and the modules of :data:`MODULES` (segmentor, DPT head, datasets, metric),
which register themselves from their own rooms when imported. It must happen
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
from typing import Any, Dict, List, Optional, Sequence, Tuple

# the packages whose registries we register into; their import triggers registration
TRIGGERS = ("mmseg", "mmdet", "mmpretrain")
# mmengine's ``PKG::path`` config lookup: module name -> pip name
PACKAGE = ("expedite_mm", "expedite-mm")

class _State:
    """What registration remembers: its result (``None`` until it ran), whether it is
    running, whether a trigger package has been imported since the finder was installed,
    and the finder (``None`` when none is installed)."""

    registered: Optional[Dict[str, List[str]]] = None
    registering = False
    triggered = False
    finder: Optional[importlib.abc.MetaPathFinder] = None


_state = _State()
_lock = threading.RLock()


def _loaded(name: str) -> bool:
    return sys.modules.get(name) is not None     # (None: an import of it is blocked)


# What the project registers besides the backbone families (expedite_mm.models.families):
# modules that register their classes from their own rooms when imported, per package.
MODULES: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "mmseg": {
        "expedite_mm.models.segmentor": ("ExpeditedEncoderDecoder",),
        "expedite_mm.models.dpt.hybrid_vit": ("HybridViT",),
        "expedite_mm.models.dpt.head": ("DPTDepthHead",),
        "expedite_mm.datasets.kitti": ("KITTIDepthDataset", "KBCrop"),
        "expedite_mm.evaluation.depth_metric": ("MonoDepthMetric",),
        "expedite_mm.datasets.digit_scenes": ("DigitScenesDataset", "LoadCheckedAnnotations"),
    },
}


def register_all_modules() -> Dict[str, List[str]]:
    """Register the expedited backbones (every row of the family table,
    :data:`expedite_mm.models.families.FAMILIES`, whose packages are installed) and the
    modules of :data:`MODULES` into the registries of every installed OpenMMLab package
    (mmseg, mmdet, mmpretrain); packages that are not installed are skipped. Idempotent.

    Returns:
        ``{package: [registered names]}``.
    """
    with _lock:
        if _state.registered is None:
            _state.registering = True
            try:
                registered = _register()
            finally:
                _state.registering = False
            _state.registered = registered
            _uninstall()
            if _loaded("mmengine"):
                register_config_package()
        return _state.registered


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _register() -> Dict[str, List[str]]:
    from .models.families import FAMILIES, load
    registered: Dict[str, List[str]] = {}
    if _installed("mmpretrain"):
        # without torchvision, mmpretrain's registries need stand-ins first ([] with it)
        from .models.mmpretrain_compat import prepare
        registered["mmpretrain"] = list(prepare())
    for package, modules in MODULES.items():
        if _installed(package):
            for module, names in modules.items():
                importlib.import_module(module)     # registers ``names`` on import
                registered.setdefault(package, []).extend(names)
    for family in FAMILIES:
        for package in family.registries:
            if not family.installed(package):
                continue
            registry = importlib.import_module(f"{package}.registry").MODELS
            registry.register_module(name=family.name, module=family.expedited_class(package),
                                     force=True)     # (our own name: idempotent)
            names = registered.setdefault(package, [])
            names.append(family.name)
            for path in family.also_registers:      # where the name is still free
                cls = load(path)
                if registry.get(cls.__name__) is None:
                    registry.register_module(module=cls)
                    names.append(cls.__name__)
    _register_missing_parts()
    return registered


def _placeholder(name: str, package: str) -> type:
    from .compat import EXTRAS, missing_part

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise missing_part(package, EXTRAS[package], f"{name} (expedite-mm)")

    return type(name, (), {"__init__": __init__, "__module__": __name__,
                           "__doc__": f"{name} needs {package}, which is not installed."})


def _register_missing_parts() -> None:
    """Where a family's registry package is installed but a package its class needs is
    not (mmpretrain, for SwinV2 and SAM in mmdet/mmseg), register a placeholder under its
    name (and its own companions') whose construction raises an error naming the pip
    extra, instead of mmengine's bare "not in the registry"."""
    from .models.families import FAMILIES
    for family in FAMILIES:
        for package in family.registries:
            missing = [p for p in family.needs(package) if not _installed(p)]
            if not _installed(package) or not missing:
                continue
            registry = importlib.import_module(f"{package}.registry").MODELS
            companions = [path.rpartition(":")[2] for path in family.also_registers]
            for name in [family.name] + [n for n in companions if n != family.stock]:
                if name not in registry.module_dict:
                    registry.register_module(name=name, module=_placeholder(name, missing[0]))


def register_config_package() -> None:
    """Let mmengine configs inherit ``'expedite_mm::<folder>/<config>.py'`` (the configs
    shipped in ``expedite_mm/.mim/configs``). Needs mmengine imported."""
    from .compat import add_config_package
    add_config_package(*PACKAGE)


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
    """Finds nothing itself: for the top-level modules in :data:`TRIGGERS`, mmengine and
    this package's own modules it asks the finders after it, and wraps the loader they
    return so that the module runs as usual and registration follows once a trigger has
    been imported and none of these modules is still importing (the outermost one is done:
    a model module of ours that imports mmseg is complete before registration reads it)."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in TRIGGERS and fullname != "mmengine" and \
                not fullname.startswith(PACKAGE[0] + "."):
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
        if self.name in TRIGGERS:
            _state.triggered = True
        if _state.triggered and _depth.value == 0 and not _state.registering \
                and _lock.acquire(blocking=False):
            # (not blocking: another thread registering may wait for this module's import
            # lock, which is held here; its registration covers this package)
            try:
                register_all_modules()
            finally:
                _lock.release()

    def __getattr__(self, name: str) -> Any:       # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


def _install() -> None:
    with _lock:
        if _state.finder is None and _state.registered is None:
            _state.finder = _RegisterAfterImport()
            sys.meta_path.insert(0, _state.finder)


def _uninstall() -> None:
    with _lock:
        if _state.finder is not None:
            if _state.finder in sys.meta_path:
                sys.meta_path.remove(_state.finder)
            _state.finder = None


def waiting() -> bool:
    """Whether registration waits for an OpenMMLab package to be imported."""
    return _state.finder is not None and _state.finder in sys.meta_path


__all__ = ["register_all_modules", "register_config_package", "activate", "waiting",
           "TRIGGERS"]
