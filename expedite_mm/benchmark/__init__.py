"""Moved to :mod:`expedite_mm.datasets.digit_scenes` (this path warns, and is removed in
expedite-mm 0.3)."""
import warnings

warnings.warn("expedite_mm.benchmark moved to expedite_mm.datasets.digit_scenes; the old "
              "path is removed in expedite-mm 0.3", DeprecationWarning, stacklevel=2)

from ..datasets.digit_scenes import (DIGIT_SCENES_CLASSES, DatasetError,  # noqa: E402
                                     DigitScenesDataset, LoadCheckedAnnotations)

__all__ = ["DigitScenesDataset", "LoadCheckedAnnotations", "DatasetError",
           "DIGIT_SCENES_CLASSES"]
