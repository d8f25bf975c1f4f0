"""The project's accuracy benchmark in mmseg: DigitScenes, a segmentation set written from
data installed packages ship (``tools/dataset_converters/digit_scenes.py``), with its
dataset class and label checks. Importing it registers them in mmseg's registries."""
from .digit_scenes import (DIGIT_SCENES_CLASSES, DatasetError, DigitScenesDataset,
                           LoadCheckedAnnotations)

__all__ = ["DigitScenesDataset", "LoadCheckedAnnotations", "DatasetError",
           "DIGIT_SCENES_CLASSES"]
