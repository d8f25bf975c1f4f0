"""DigitScenes for mmseg: the project's accuracy benchmark (11 classes).

Written by ``tools/dataset_converters/digit_scenes.py``
(:mod:`~expedite_mm.datasets.digit_scenes_writer`) from data that installed packages
ship (scikit-image photos as backgrounds; objects shaped like scikit-learn's handwritten
digits, cut from ten scikit-image material textures), in mmseg's standard layout::

    data_root/img_dir/{train,val}/000000.png    RGB
    data_root/ann_dir/{train,val}/000000.png    uint8 labels: 0 background, 1-10 materials

mmseg's own pipeline, dataloader and ``IoUMetric`` are used unchanged. What mmseg would
report late or cryptically is checked here and named: a missing or empty image directory
and an image without its label map when the dataset is built; an unreadable label map
and a label value outside the classes when it is loaded (``LoadCheckedAnnotations``, in
place of ``LoadAnnotations`` in the pipeline; mmcv names an unreadable image itself).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

# the writer's MATERIALS (digit_scenes_writer.py), in order (class i + 1)
DIGIT_SCENES_CLASSES = ("background", "brick", "grass", "gravel", "coins", "cells", "deep sky",
                        "tissue", "moon", "retina", "page")
DIGIT_SCENES_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25],
                        [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
                        [240, 50, 230], [210, 245, 60], [250, 190, 212]]


class DatasetError(ValueError):
    """A dataset file or directory is missing or malformed (the message names it)."""


@DATASETS.register_module()
class DigitScenesDataset(BaseSegDataset):
    """DigitScenes in mmseg's layout (see the module docstring).

    Args:
        **kwargs: ``BaseSegDataset`` arguments (``data_root``, ``data_prefix``,
            ``pipeline``, ...); images and label maps are ``.png``, labels are not reduced.
    """

    METAINFO = dict(classes=DIGIT_SCENES_CLASSES, palette=DIGIT_SCENES_PALETTE)

    def __init__(self, **kwargs) -> None:
        super().__init__(img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=False,
                         **kwargs)

    def load_data_list(self) -> List[Dict]:
        image_dir = self.data_prefix.get("img_path", "")
        label_dir = self.data_prefix.get("seg_map_path", "")
        if not osp.isdir(image_dir):
            raise DatasetError(f"DigitScenes: image directory {image_dir!r} does not exist; "
                               f"write the dataset with tools/dataset_converters/digit_scenes.py "
                               f"or set data_root")
        names = sorted(n for n in os.listdir(image_dir) if n.endswith(self.img_suffix))
        if not names:
            raise DatasetError(f"DigitScenes: no {self.img_suffix} images in {image_dir!r}")
        if not osp.isdir(label_dir):
            raise DatasetError(f"DigitScenes: label directory {label_dir!r} does not exist")
        data_list = []
        for name in names:
            label = osp.join(label_dir, name[:-len(self.img_suffix)] + self.seg_map_suffix)
            if not osp.isfile(label):
                raise DatasetError(f"DigitScenes: image {osp.join(image_dir, name)!r} has no "
                                   f"label map {label!r}")
            data_list.append(dict(img_path=osp.join(image_dir, name), seg_map_path=label,
                                  label_map=self.label_map,
                                  reduce_zero_label=self.reduce_zero_label, seg_fields=[]))
        return data_list


@TRANSFORMS.register_module()
class LoadCheckedAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` that names the file it cannot use.

    An unreadable label map, or one with values outside ``[0, num_classes)`` and
    ``ignore_index`` (which ``IoUMetric`` would silently drop), raises
    :class:`DatasetError` naming the file (and the values).

    Args:
        num_classes: the number of classes.
        ignore_index: the one value allowed besides the classes (mmseg's default 255).
        **kwargs: ``LoadAnnotations`` arguments.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def _load_seg_map(self, results: Dict) -> None:
        path = results.get("seg_map_path")
        try:
            super()._load_seg_map(results)
        except Exception as error:  # PIL/cv2 decoding errors do not say which file
            raise DatasetError(f"label map {path!r} could not be read: {error}") from error
        values = np.unique(results["gt_seg_map"])
        bad = values[(values >= self.num_classes) & (values != self.ignore_index)]
        if bad.size:
            raise DatasetError(f"label map {path!r} has values {bad.tolist()} outside the "
                               f"{self.num_classes} classes [0, {self.num_classes - 1}] (and "
                               f"ignore_index {self.ignore_index})")

    def __repr__(self) -> str:
        return (f"{super().__repr__()[:-1]}, num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index})")
