"""Moved: DPT's backbone and head to :mod:`expedite_mm.models.dpt`, its KITTI dataset to
:mod:`expedite_mm.datasets.kitti`, its metric to :mod:`expedite_mm.evaluation.depth_metric`
(this path warns, and is removed in expedite-mm 0.3)."""
import warnings

warnings.warn("expedite_mm.dpt moved to expedite_mm.models.dpt (backbone, head), "
              "expedite_mm.datasets.kitti and expedite_mm.evaluation.depth_metric; the old "
              "path is removed in expedite-mm 0.3", DeprecationWarning, stacklevel=2)

from ..datasets.kitti import KB_CROP_SIZE, KBCrop, KITTIDepthDataset  # noqa: E402
from ..evaluation.depth_metric import MonoDepthMetric  # noqa: E402
from ..models.dpt import DPTDepthHead, ExpeditedHybridViT, HybridViT  # noqa: E402

__all__ = ["HybridViT", "ExpeditedHybridViT", "DPTDepthHead", "KITTIDepthDataset", "KBCrop",
           "KB_CROP_SIZE", "MonoDepthMetric"]
