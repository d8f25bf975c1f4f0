"""KITTI depth (Eigen split) for mmseg's ``DepthEstimator``: dataset and KB crop.

Layout (the one BTS and DPT's evaluation use; ``data_root`` e.g. ``data/kitti``)::

    data/kitti/
      raw/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png     (RGB)
      gt/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png
      eigen_test_files_with_gt.txt

Every line of the split file is ``<image path> <depth path or None> <focal length>``,
relative to ``data_prefix['img_path']`` and ``data_prefix['depth_map_path']``. Ground
truth is a 16-bit PNG of depth x 256 (0 = no measurement): load it with
``LoadDepthAnnotation(depth_rescale_factor=1 / 256)``. Lines without ground truth are
skipped (they cannot be evaluated; BTS skips them too).

``KBCrop`` is the KITTI benchmark crop DPT's KITTI model runs on: the bottom 352 rows and
the central 1216 columns. The crop becomes the image the model and the metric see
(``img_shape`` and ``ori_shape``); where it sits in the full image is kept in
``crop_offset`` / ``uncropped_shape``, so that ``MonoDepthMetric`` places the Garg/Eigen
crop in full-image coordinates.
"""
from __future__ import annotations

import os.path as osp
from typing import Dict, List, Tuple

import mmengine.fileio as fileio
from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS, TRANSFORMS

KB_CROP_SIZE = (352, 1216)   # (height, width)


@DATASETS.register_module()
class KITTIDepthDataset(BaseSegDataset):
    """KITTI Eigen-split depth; ``ann_file`` is the split's file list (see module doc)."""

    METAINFO = dict(classes=("depth",))   # mmseg's test mode wants a class list

    def __init__(self, ann_file: str = "eigen_test_files_with_gt.txt",
                 data_prefix: dict = dict(img_path="raw", depth_map_path="gt"),
                 **kwargs) -> None:
        super().__init__(ann_file=ann_file, data_prefix=data_prefix, **kwargs)

    def load_data_list(self) -> List[dict]:
        if not self.ann_file:
            raise ValueError("KITTIDepthDataset needs ann_file (the Eigen split file list)")
        img_dir = self.data_prefix.get("img_path", "")
        depth_dir = self.data_prefix.get("depth_map_path", "")
        data_list = []
        for number, line in enumerate(fileio.get_text(
                self.ann_file, backend_args=self.backend_args).splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ValueError(f"{self.ann_file}:{number}: expected '<image> <depth or None> "
                                 f"<focal>', got {line!r}")
            image, depth, focal = fields
            if depth == "None":
                continue
            data_list.append(dict(img_path=osp.join(img_dir, image),
                                  depth_map_path=osp.join(depth_dir, depth),
                                  focal=float(focal), seg_fields=[]))
        return data_list


@TRANSFORMS.register_module()
class KBCrop(BaseTransform):
    """Crop image and depth maps to the KITTI benchmark region (bottom rows, centred).

    Required keys: img (and any ``seg_fields``). Modified: img, seg fields, img_shape,
    ori_shape. Added: crop_offset (top, left), uncropped_shape (H, W).

    Args:
        size: (height, width) of the crop, (352, 1216) for KITTI.
    """

    def __init__(self, size: Tuple[int, int] = KB_CROP_SIZE) -> None:
        super().__init__()
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f"size must be a (height, width) pair of positive ints, got {size!r}")
        self.size = tuple(size)

    def transform(self, results: Dict) -> Dict:
        H, W = results["img"].shape[:2]
        h, w = self.size
        if H < h or W < w:
            raise ValueError(f"KBCrop: image {results.get('img_path', '')} is {H}x{W}, smaller "
                             f"than the crop {h}x{w}")
        top, left = H - h, (W - w) // 2
        results["img"] = results["img"][top:top + h, left:left + w]
        for key in results.get("seg_fields", []):
            results[key] = results[key][top:top + h, left:left + w]
        results["img_shape"] = results["ori_shape"] = (h, w)
        results["crop_offset"] = (top, left)
        results["uncropped_shape"] = (H, W)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
