"""Label-free agreement of an expedited model's predictions with the stock model's.

No labels are needed: the stock model's prediction on an image plays the ground truth,
and the expedited prediction is scored against it with the task's own kind of metric.
Every measure works in two steps, so that the per-image part can be cached and summed over
any subset of the images (``tools/analysis/autotune.py`` does successive halving on them):

* :meth:`Agreement.extract` turns one predicted data sample into a compact reference
  (numpy arrays; what is stored of the stock prediction),
* :meth:`Agreement.compare` gives the per-image statistics of a prediction against a
  reference (JSON-able: plain numbers and lists),
* :meth:`Agreement.aggregate` turns the statistics of several images into the score, in
  percent, 100 meaning identical predictions on those images.

=================== ====================== =============================================
measure             predictions            score (100 = identical)
=================== ====================== =============================================
``mIoU``            ``pred_sem_seg``       mIoU of the expedited argmax against the stock
                                           argmax, intersections and unions summed over
                                           the images (mmseg's ``IoUMetric`` counts)
``PQ``              ``pred_panoptic_seg``  panoptic quality against the stock segments
                                           (matched: same class, IoU > 0.5)
``mask PQ``         ``pred_instances``     the same on the instance masks scoring at
                                           least ``score_thr`` (each model's own)
``1-AbsRel``        ``pred_depth_map``     100 (1 - AbsRel), AbsRel = mean over pixels
                                           of ``|d - d_stock| / d_stock``
``top-1``           ``pred_label``         how often the top-1 classes agree
``cosine``          ``image_embedding``    mean cosine similarity of the embeddings
=================== ====================== =============================================
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

Stats = Dict[str, Any]
Reference = Dict[str, np.ndarray]


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class Agreement:
    """Base class: one kind of prediction scored against the stock one (see module doc)."""

    #: short name of the score (a column header)
    name: str = ""
    #: the data-sample field it reads
    field: str = ""

    def extract(self, sample: Any) -> Reference:
        raise NotImplementedError

    def compare(self, pred: Reference, ref: Reference) -> Stats:
        raise NotImplementedError

    def aggregate(self, stats: Sequence[Stats]) -> float:
        raise NotImplementedError


# --------------------------------------------------------------------------- semantic
class SegmentationAgreement(Agreement):
    """mIoU (percent) of the expedited class map against the stock one.

    Per image the per-class intersection and union areas (mmseg's
    ``IoUMetric.intersect_and_union``, stock map as the label); summed over the images;
    the mean IoU over the classes present in either map of any image, as ``IoUMetric``
    averages (classes with an empty union are left out).
    """

    name, field = "mIoU", "pred_sem_seg"

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def extract(self, sample: Any) -> Reference:
        seg = _numpy(sample.pred_sem_seg.data)
        return {"sem_seg": seg.reshape(seg.shape[-2:]).astype(np.int32)}

    def compare(self, pred: Reference, ref: Reference) -> Stats:
        from mmseg.evaluation import IoUMetric
        p, r = torch.from_numpy(pred["sem_seg"]), torch.from_numpy(ref["sem_seg"])
        if p.shape != r.shape:
            raise ValueError(f"prediction {tuple(p.shape)} and stock prediction "
                             f"{tuple(r.shape)} differ in shape")
        valid = r[r != self.ignore_index]
        num_classes = int(max(p.max().item(), valid.max().item() if valid.numel() else 0)) + 1
        intersect, union, _, _ = IoUMetric.intersect_and_union(p, r, num_classes,
                                                               self.ignore_index)
        present = torch.nonzero(union).flatten().tolist()
        return {"classes": present, "intersect": [float(intersect[c]) for c in present],
                "union": [float(union[c]) for c in present]}

    def aggregate(self, stats: Sequence[Stats]) -> float:
        intersect: Dict[int, float] = {}
        union: Dict[int, float] = {}
        for s in stats:
            for c, i, u in zip(s["classes"], s["intersect"], s["union"]):
                intersect[c] = intersect.get(c, 0.0) + i
                union[c] = union.get(c, 0.0) + u
        if not union:
            return 100.0
        return 100.0 * float(np.mean([intersect[c] / union[c] for c in union]))


# --------------------------------------------------------------------------- panoptic / instances
def match_segments(ref_masks: torch.Tensor, ref_labels: Sequence[int], pred_masks: torch.Tensor,
                   pred_labels: Sequence[int], pred_ignored: Optional[Sequence[bool]] = None
                   ) -> Stats:
    """PQ statistics per class of predicted segments against reference segments.

    Args:
        ref_masks: (R, H, W) bool; pred_masks: (P, H, W) bool (may overlap each other).
        ref_labels / pred_labels: their classes.
        pred_ignored: per predicted segment, whether an unmatched one is not counted as a
            false positive (COCO's rule for segments lying mostly in the void).

    Returns:
        ``{'classes', 'tp', 'fp', 'fn', 'iou'}``: per class the matches (same class,
        IoU > 0.5, which makes them unique), unmatched predictions, unmatched references
        and the sum of the matches' IoUs.
    """
    ref = ref_masks.flatten(1).float()                                 # (R, H * W)
    pred = pred_masks.flatten(1).float()
    if len(ref_labels) and len(pred_labels):
        inter = ref @ pred.T                                            # (R, P)
        union = ref.sum(1, keepdim=True) + pred.sum(1)[None] - inter
        iou = inter / union.clamp(min=1)
        same = torch.tensor(ref_labels)[:, None] == torch.tensor(pred_labels)[None]
        matched = (iou > 0.5) & same
    else:
        iou = matched = torch.zeros(len(ref_labels), len(pred_labels), dtype=torch.bool)
    per: Dict[int, List[float]] = {}
    for r, label in enumerate(ref_labels):
        entry = per.setdefault(int(label), [0, 0, 0, 0.0])
        hits = torch.nonzero(matched[r]).flatten()
        if len(hits):
            entry[0] += 1
            entry[3] += float(iou[r, hits[0]])
        else:
            entry[2] += 1
    hit = matched.any(0) if len(ref_labels) else torch.zeros(len(pred_labels), dtype=torch.bool)
    for p, label in enumerate(pred_labels):
        if not bool(hit[p]) and not (pred_ignored is not None and pred_ignored[p]):
            per.setdefault(int(label), [0, 0, 0, 0.0])[1] += 1
    classes = sorted(per)
    return {"classes": classes, "tp": [per[c][0] for c in classes],
            "fp": [per[c][1] for c in classes], "fn": [per[c][2] for c in classes],
            "iou": [per[c][3] for c in classes]}


def panoptic_quality(stats: Sequence[Stats]) -> float:
    """PQ (percent) from per-image :func:`match_segments` statistics: per class
    ``sum IoU / (TP + FP/2 + FN/2)`` over all images, averaged over the classes that
    occur; 100 when nothing occurs at all."""
    totals: Dict[int, np.ndarray] = {}
    for s in stats:
        for i, c in enumerate(s["classes"]):
            row = np.array([s["tp"][i], s["fp"][i], s["fn"][i], s["iou"][i]], dtype=np.float64)
            totals[c] = totals.get(c, 0) + row
    if not totals:
        return 100.0
    quality = [t[3] / (t[0] + 0.5 * t[1] + 0.5 * t[2]) for t in totals.values()]
    return 100.0 * float(np.mean(quality))


class PanopticAgreement(Agreement):
    """PQ (percent) of the expedited panoptic segments against the stock ones (mmdet's
    ``pred_panoptic_seg``: id = class + instance * ``INSTANCE_OFFSET``, ``void`` for
    unlabelled pixels). Predicted segments lying more than half in the stock void are not
    false positives (COCO's rule)."""

    name, field = "PQ", "pred_panoptic_seg"

    def __init__(self, void: int, instance_offset: int) -> None:
        self.void, self.offset = int(void), int(instance_offset)

    def extract(self, sample: Any) -> Reference:
        ids = _numpy(sample.pred_panoptic_seg.sem_seg)
        return {"panoptic": ids.reshape(ids.shape[-2:]).astype(np.int64)}

    def _segments(self, ids: torch.Tensor):
        values = [v for v in torch.unique(ids).tolist() if v % self.offset != self.void]
        masks = (ids[None] == torch.tensor(values).view(-1, 1, 1)) if values else \
            torch.zeros((0,) + tuple(ids.shape), dtype=torch.bool)
        return masks, [v % self.offset for v in values]

    def compare(self, pred: Reference, ref: Reference) -> Stats:
        p, r = torch.from_numpy(pred["panoptic"]), torch.from_numpy(ref["panoptic"])
        ref_masks, ref_labels = self._segments(r)
        pred_masks, pred_labels = self._segments(p)
        void = (r % self.offset == self.void)
        ignored = [bool((m & void).sum() * 2 > m.sum()) for m in pred_masks]
        return match_segments(ref_masks, ref_labels, pred_masks, pred_labels, ignored)

    def aggregate(self, stats: Sequence[Stats]) -> float:
        return panoptic_quality(stats)


class InstanceAgreement(Agreement):
    """PQ-style agreement (percent) of instance masks: the stock instances scoring at
    least ``score_thr`` are the reference, the expedited ones above the same threshold
    are matched to them (same class, mask IoU > 0.5)."""

    name, field = "mask PQ", "pred_instances"

    def __init__(self, score_thr: float = 0.3) -> None:
        self.score_thr = float(score_thr)

    def extract(self, sample: Any) -> Reference:
        instances = sample.pred_instances
        if "masks" not in instances:
            raise ValueError("the model predicts instances without masks; the label-free "
                             "agreement compares masks")
        keep = _numpy(instances.scores) >= self.score_thr
        masks = _numpy(instances.masks)[keep].astype(bool)
        return {"masks": np.packbits(masks, axis=-1), "width": np.array(masks.shape[-1]),
                "labels": _numpy(instances.labels)[keep].astype(np.int64)}

    @staticmethod
    def _masks(ref: Reference) -> torch.Tensor:
        unpacked = np.unpackbits(ref["masks"], axis=-1, count=int(ref["width"]))
        return torch.from_numpy(unpacked.astype(bool))

    def compare(self, pred: Reference, ref: Reference) -> Stats:
        return match_segments(self._masks(ref), ref["labels"].tolist(), self._masks(pred),
                              pred["labels"].tolist())

    def aggregate(self, stats: Sequence[Stats]) -> float:
        return panoptic_quality(stats)


# --------------------------------------------------------------------------- depth, labels, embeddings
class DepthAgreement(Agreement):
    """100 (1 - AbsRel) of the expedited depth map against the stock one, AbsRel the mean
    over all pixels of all images where the stock depth is positive."""

    name, field = "1-AbsRel", "pred_depth_map"

    def extract(self, sample: Any) -> Reference:
        depth = _numpy(sample.pred_depth_map.data)
        return {"depth": depth.reshape(depth.shape[-2:]).astype(np.float32)}

    def compare(self, pred: Reference, ref: Reference) -> Stats:
        d, s = pred["depth"].astype(np.float64), ref["depth"].astype(np.float64)
        valid = s > 0
        return {"abs_rel_sum": float((np.abs(d - s)[valid] / s[valid]).sum()),
                "pixels": int(valid.sum())}

    def aggregate(self, stats: Sequence[Stats]) -> float:
        pixels = sum(s["pixels"] for s in stats)
        if pixels == 0:
            return 100.0
        return 100.0 * (1.0 - sum(s["abs_rel_sum"] for s in stats) / pixels)


class ClassificationAgreement(Agreement):
    """How often (percent) the expedited top-1 class is the stock top-1 class."""

    name, field = "top-1", "pred_label"

    def extract(self, sample: Any) -> Reference:
        return {"label": _numpy(sample.pred_label).reshape(-1)[:1].astype(np.int64)}

    def compare(self, pred: Reference, ref: Reference) -> Stats:
        return {"same": int(pred["label"][0] == ref["label"][0])}

    def aggregate(self, stats: Sequence[Stats]) -> float:
        return 100.0 * float(np.mean([s["same"] for s in stats])) if stats else 100.0


class EmbeddingAgreement(Agreement):
    """Mean cosine similarity (percent) of the expedited and stock image embeddings
    (SAM's encoder: token-level fidelity of what the mask decoder reads)."""

    name, field = "cosine", "image_embedding"

    def extract(self, sample: Any) -> Reference:
        return {"embedding": _numpy(sample.image_embedding).astype(np.float32)}

    def compare(self, pred: Reference, ref: Reference) -> Stats:
        a, b = pred["embedding"].ravel().astype(np.float64), ref["embedding"].ravel().astype(np.float64)
        denominator = np.linalg.norm(a) * np.linalg.norm(b)
        return {"cosine": float(a @ b / denominator) if denominator > 0 else float(np.array_equal(a, b))}

    def aggregate(self, stats: Sequence[Stats]) -> float:
        return 100.0 * float(np.mean([s["cosine"] for s in stats])) if stats else 100.0


def agreement_for(sample: Any, model: Optional[torch.nn.Module] = None) -> Agreement:
    """The measure for a model's predicted data sample (see the module table).

    ``model`` supplies what some measures need besides the sample (the panoptic void
    class). Raises ``ValueError`` for predictions no measure reads (e.g. boxes only).
    """
    fields = set(sample.keys()) if hasattr(sample, "keys") else set()
    if "pred_panoptic_seg" in fields:
        from mmdet.evaluation.functional import INSTANCE_OFFSET
        head = getattr(model, "panoptic_fusion_head", None)
        void = getattr(head, "num_classes", None)
        if void is None:
            raise ValueError("cannot tell the void class of the panoptic predictions (the "
                             "model has no panoptic_fusion_head.num_classes)")
        return PanopticAgreement(void, INSTANCE_OFFSET)
    if "pred_sem_seg" in fields:
        ignore = getattr(getattr(model, "decode_head", None), "ignore_index", 255)
        return SegmentationAgreement(ignore if isinstance(ignore, int) else 255)
    if "pred_depth_map" in fields:
        return DepthAgreement()
    if "pred_instances" in fields:
        return InstanceAgreement()
    if "pred_label" in fields:
        return ClassificationAgreement()
    if "image_embedding" in fields:
        return EmbeddingAgreement()
    raise ValueError(f"no label-free agreement for predictions with fields {sorted(fields)}; "
                     f"supported: pred_sem_seg, pred_panoptic_seg, pred_instances (masks), "
                     f"pred_depth_map, pred_label, image_embedding")


__all__ = ["Agreement", "SegmentationAgreement", "PanopticAgreement", "InstanceAgreement",
           "DepthAgreement", "ClassificationAgreement", "EmbeddingAgreement",
           "match_segments", "panoptic_quality", "agreement_for"]
