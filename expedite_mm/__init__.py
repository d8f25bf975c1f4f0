"""expedite-mm: expedite trained vision transformers for dense prediction without
fine-tuning (token clustering + token reconstruction), as an OpenMMLab plugin.

The operators (:mod:`expedite_mm.ops`) are pure torch: importing them, or this package,
imports no OpenMMLab package and changes no state of torch or of the warnings module.

The backbones are registered into the registries of the installed OpenMMLab packages by
:func:`register_all_modules`, whatever the order of imports (:mod:`expedite_mm.registration`):
at once when mmseg, mmdet, mmpretrain or mmengine is already imported (as when a config's
``custom_imports=dict(imports=['expedite_mm'])`` is read), otherwise right after the first
of mmseg / mmdet / mmpretrain has been imported. Checkpoints are loaded safely inside
:func:`expedite_mm.apis.checkpoint.checkpoint_policy` (our tools do); importing changes
nothing in torch's loading.
"""
from .ops import TokenClustering, TokenReconstruction
from .registration import activate as _activate
from .registration import register_all_modules

__version__ = "0.1.0"

_activate()

__all__ = ["TokenClustering", "TokenReconstruction", "register_all_modules", "__version__"]
