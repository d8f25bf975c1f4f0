"""expedite-mm: expedite trained vision transformers for dense prediction without
fine-tuning (token clustering + token reconstruction), as an OpenMMLab plugin.

``import expedite_mm`` registers the expedited backbones into the registries of the
installed OpenMMLab packages (see :mod:`expedite_mm.models`) and lets torch's safe
(``weights_only``) loading accept the types official checkpoints hold
(:mod:`expedite_mm.utils.checkpoint`).
"""
from . import ops
from .models import REGISTERED
from .ops import TokenClustering, TokenReconstruction
from .utils.checkpoint import allow_official_checkpoint_types

# Official checkpoints hold numpy arrays / mmengine HistoryBuffers besides tensors: allow
# exactly those for torch's weights_only loading (mmengine calls torch.load bare).
allow_official_checkpoint_types()

__version__ = "0.1.0"
__all__ = ["ops", "TokenClustering", "TokenReconstruction", "REGISTERED", "__version__"]
