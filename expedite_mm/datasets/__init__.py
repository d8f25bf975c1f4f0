"""Datasets and transforms for mmseg (registered on import; needs mmseg)."""
from .kitti_depth import KB_CROP_SIZE, KBCrop, KITTIDepthDataset

__all__ = ["KITTIDepthDataset", "KBCrop", "KB_CROP_SIZE"]
