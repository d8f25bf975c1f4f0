"""Datasets and transforms for mmseg (registered on import; needs mmseg)."""
from .digit_scenes import (DIGIT_SCENES_CLASSES, LoadCheckedAnnotations, DatasetError,
                           DigitScenesDataset)
from .kitti_depth import KB_CROP_SIZE, KBCrop, KITTIDepthDataset

__all__ = ["KITTIDepthDataset", "KBCrop", "KB_CROP_SIZE", "DigitScenesDataset",
           "LoadCheckedAnnotations", "DatasetError", "DIGIT_SCENES_CLASSES"]
