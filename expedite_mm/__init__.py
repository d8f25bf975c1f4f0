"""expedite-mm: expedite trained vision transformers for dense prediction without
fine-tuning (token clustering + token reconstruction), as an OpenMMLab plugin.

``import expedite_mm`` registers the expedited backbones into the registries of the
installed OpenMMLab packages (see :mod:`expedite_mm.models`). Checkpoints are loaded safely
inside :func:`expedite_mm.utils.checkpoint.checkpoint_policy` (our tools do); importing
changes nothing in torch's loading.
"""
import warnings

# mmengine 0.10 resolves `mmseg::`/`mmdet::` config bases through pkg_resources, which
# setuptools (>= 77, needed by torch >= 2.6) deprecates loudly on every lookup; harmless.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from . import ops  # noqa: E402
from .models import REGISTERED  # noqa: E402
from .ops import TokenClustering, TokenReconstruction  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ops", "TokenClustering", "TokenReconstruction", "REGISTERED", "__version__"]
