"""expedite-mm: expedite trained vision transformers for dense prediction without
fine-tuning (token clustering + token reconstruction), as an OpenMMLab plugin.

``import expedite_mm`` registers the expedited backbones into the registries of the
installed OpenMMLab packages (see :mod:`expedite_mm.models`) and lets torch's safe
(``weights_only``) loading accept the types official checkpoints hold
(:mod:`expedite_mm.utils.checkpoint`).
"""
import warnings

# mmengine 0.10 resolves `mmseg::`/`mmdet::` config bases through pkg_resources, which
# setuptools (>= 77, needed by torch >= 2.6) deprecates loudly on every lookup; harmless.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from . import ops  # noqa: E402
from .models import REGISTERED  # noqa: E402
from .ops import TokenClustering, TokenReconstruction  # noqa: E402
from .utils.checkpoint import allow_official_checkpoint_types  # noqa: E402

# Official checkpoints hold numpy arrays / mmengine HistoryBuffers besides tensors: allow
# exactly those for torch's weights_only loading (mmengine calls torch.load bare).
allow_official_checkpoint_types()

__version__ = "0.1.0"
__all__ = ["ops", "TokenClustering", "TokenReconstruction", "REGISTERED", "__version__"]
