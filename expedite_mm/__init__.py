"""expedite-mm: expedite trained vision transformers for dense prediction without
fine-tuning (token clustering + token reconstruction), as an OpenMMLab plugin.

``import expedite_mm`` registers the expedited backbones into the registries of the
installed OpenMMLab packages (see :mod:`expedite_mm.models`).
"""
from . import ops
from .models import REGISTERED
from .ops import TokenClustering, TokenReconstruction

__version__ = "0.1.0"
__all__ = ["ops", "TokenClustering", "TokenReconstruction", "REGISTERED", "__version__"]
