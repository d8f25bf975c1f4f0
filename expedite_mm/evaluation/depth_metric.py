"""``MonoDepthMetric``: mmseg's ``DepthMetric`` with the Eigen-split evaluation protocol.

DPT's KITTI and NYUv2 numbers come from BTS's ``eval_with_pngs.py``; on top of mmseg's
``DepthMetric`` (ground truth valid in (min_depth_eval, max_depth_eval), metrics per
image, averaged over images) that protocol

* clips predictions to [min_depth_eval, max_depth_eval] (inf -> max, nan -> min) before
  the metrics (``clip_pred``);
* evaluates KITTI inside the Garg or the Eigen crop, fractions of the *full* image:
  rows [0.40810811 H, 0.99189189 H) x columns [0.03594771 W, 0.96405229 W) (Garg) and
  rows [0.3324324 H, 0.91351351 H) x columns [0.0359477 W, 0.96405229 W) (Eigen; the
  constants are BTS's, digit for digit). For a ``KBCrop``-ed
  sample the box is placed with its ``crop_offset`` in its ``uncropped_shape``;
* evaluates NYUv2 inside rows 45:471 x columns 41:601 (``nyu_crop``, mmseg's, which is
  BTS's ``--eigen_crop`` for NYU).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from mmseg.evaluation import DepthMetric
from mmseg.registry import METRICS
from torch import Tensor

# (row start, row end, column start, column end) as fractions of the full KITTI image
KITTI_CROPS = {
    "kitti_garg_crop": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "kitti_eigen_crop": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}
NYU_CROP = (45, 471, 41, 601)
CROP_TYPES = (None, "nyu_crop", *KITTI_CROPS)


@METRICS.register_module()
class MonoDepthMetric(DepthMetric):
    """``DepthMetric`` + prediction clipping + KITTI Garg/Eigen crops (see module doc).

    Args:
        crop_type: None, ``'nyu_crop'``, ``'kitti_garg_crop'`` or ``'kitti_eigen_crop'``.
        clip_pred: clip predictions to [min_depth_eval, max_depth_eval] (BTS, DPT).
        **kwargs: ``DepthMetric``'s (min_depth_eval, max_depth_eval, ...).
    """

    def __init__(self, crop_type: Optional[str] = None, clip_pred: bool = True,
                 **kwargs) -> None:
        if crop_type not in CROP_TYPES:
            raise ValueError(f"crop_type must be one of {CROP_TYPES}, got {crop_type!r}")
        if kwargs.get("format_only") or kwargs.get("output_dir"):
            raise ValueError("format_only/output_dir are not supported by MonoDepthMetric; "
                             "dump predictions with tools/test.py --out instead")
        super().__init__(crop_type=None, **kwargs)
        self.crop_type = crop_type
        self.clip_pred = clip_pred

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample["pred_depth_map"]["data"].squeeze()
            gt = sample["gt_depth_map"]["data"].squeeze().to(pred)
            if self.clip_pred:
                pred = torch.nan_to_num(pred, nan=self.min_depth_eval,
                                        posinf=self.max_depth_eval)
                pred = pred.clamp(self.min_depth_eval, self.max_depth_eval)
            mask = self.eval_mask(gt, sample.get("crop_offset", (0, 0)),
                                  sample.get("uncropped_shape", tuple(gt.shape)))
            self.results.append((gt[mask], pred[mask]))

    def eval_mask(self, gt: Tensor, offset: Tuple[int, int] = (0, 0),
                  full_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        """Valid ground truth inside the crop; ``gt`` (h, w) sits at ``offset`` of ``full_shape``."""
        valid = (gt > self.min_depth_eval) & (gt < self.max_depth_eval)
        if self.crop_type is None:
            return valid
        H, W = full_shape if full_shape is not None else gt.shape
        if self.crop_type == "nyu_crop":
            r0, r1, c0, c1 = NYU_CROP
        else:
            fr0, fr1, fc0, fc1 = KITTI_CROPS[self.crop_type]
            r0, r1, c0, c1 = int(fr0 * H), int(fr1 * H), int(fc0 * W), int(fc1 * W)
        top, left = offset
        crop = torch.zeros_like(valid)
        crop[max(r0 - top, 0):max(r1 - top, 0), max(c0 - left, 0):max(c1 - left, 0)] = True
        return valid & crop
