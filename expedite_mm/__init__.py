"""expedite-mm: expedite trained vision transformers for dense prediction without
fine-tuning (token clustering + token reconstruction), as an OpenMMLab plugin.

The operators (:mod:`expedite_mm.ops`) are pure torch: importing them, or this package,
imports no OpenMMLab package and changes no process-wide state.

The backbones are registered into the registries of the installed OpenMMLab packages by
:func:`register_all_modules` (what ``import expedite_mm.models`` does). A config's
``custom_imports=dict(imports=['expedite_mm'])`` registers them too: when this package is
imported while mmengine is already loaded -- as it is whenever a config is being read --
it registers at once. Checkpoints are loaded safely inside
:func:`expedite_mm.utils.checkpoint.checkpoint_policy` (our tools do); importing changes
nothing in torch's loading.
"""
import sys

from .ops import TokenClustering, TokenReconstruction

__version__ = "0.1.0"


def register_all_modules() -> dict:
    """Register the expedited backbones (and the few modules DPT needs) into the ``MODELS``
    etc. registries of every installed OpenMMLab package (mmseg, mmdet, mmpretrain);
    packages that are not installed are skipped. Idempotent.

    Returns:
        ``{package: [registered names]}``.
    """
    from .models import REGISTERED
    return REGISTERED


if "mmengine" in sys.modules:   # an OpenMMLab program or config is running: register now
    register_all_modules()

__all__ = ["TokenClustering", "TokenReconstruction", "register_all_modules", "__version__"]
