"""The label-free agreement measures (expedite_mm/analysis/agreement.py) against by-hand
computations on small predictions."""
import numpy as np
import pytest
import torch
from mmengine.structures import BaseDataElement, PixelData

from expedite_mm.analysis.agreement import (ClassificationAgreement, DepthAgreement,
                                         EmbeddingAgreement, InstanceAgreement,
                                         PanopticAgreement, SegmentationAgreement,
                                         agreement_for, match_segments)


def seg_sample(classes):
    sample = BaseDataElement()
    sample.pred_sem_seg = PixelData(data=torch.as_tensor(classes)[None])
    return sample


def test_segmentation_is_miou_over_the_images():
    rng = np.random.default_rng(0)
    refs = [rng.integers(0, 4, (6, 7)) for _ in range(3)]
    preds = [np.where(rng.random(r.shape) < 0.7, r, rng.integers(0, 5, r.shape)) for r in refs]
    preds[1][0, 0] = 9                                  # a class only the prediction has
    measure = SegmentationAgreement()
    stats = [measure.compare(measure.extract(seg_sample(p)), measure.extract(seg_sample(r)))
             for p, r in zip(preds, refs)]
    # by hand: intersections and unions summed over the images, mean over the classes
    classes = sorted(set(np.concatenate([a.ravel() for a in preds + refs]).tolist()))
    ious = []
    for c in classes:
        inter = sum(int(((p == c) & (r == c)).sum()) for p, r in zip(preds, refs))
        union = sum(int(((p == c) | (r == c)).sum()) for p, r in zip(preds, refs))
        ious.append(inter / union)
    assert measure.aggregate(stats) == pytest.approx(100 * np.mean(ious), abs=1e-9)
    assert measure.aggregate(stats[:1]) != measure.aggregate(stats)
    same = measure.compare(measure.extract(seg_sample(refs[0])), measure.extract(seg_sample(refs[0])))
    assert measure.aggregate([same]) == 100.0


def test_segmentation_ignores_the_stock_ignore_index():
    measure = SegmentationAgreement(ignore_index=255)
    ref = np.array([[0, 255], [1, 1]])
    pred = np.array([[0, 3], [1, 0]])
    stats = measure.compare({"sem_seg": pred}, {"sem_seg": ref})
    # pixel (0, 1) does not count: class 0: I 1, U 2; class 1: I 1, U 2
    assert measure.aggregate([stats]) == pytest.approx(50.0)


def test_match_segments_and_panoptic_quality_by_hand():
    offset, void = 1000, 5
    ref = np.full((4, 6), void)
    ref[:, :3] = 1                          # stuff class 1
    ref[:2, 3:] = 2 + 1 * offset            # thing of class 2, instance 1
    ref[2:, 3:] = 2 + 2 * offset            # thing of class 2, instance 2
    pred = ref.copy()
    pred[0, :3] = 3                         # class 1 loses a row to class 3: IoU 9/12
    pred[2:, 3:] = 4                        # instance 2 predicted as class 4
    measure = PanopticAgreement(void, offset)
    stats = measure.compare({"panoptic": pred}, {"panoptic": ref})
    per = dict(zip(stats["classes"], zip(stats["tp"], stats["fp"], stats["fn"], stats["iou"])))
    assert per[1] == (1, 0, 0, pytest.approx(9 / 12))
    assert per[2] == (1, 0, 1, pytest.approx(1.0))          # instance 1 matched, 2 missed
    assert per[3] == (0, 1, 0, 0.0) and per[4] == (0, 1, 0, 0.0)
    # PQ per class: 0.75, 1 / 1.5, 0, 0 -> mean
    assert measure.aggregate([stats]) == pytest.approx(100 * (0.75 + 1 / 1.5) / 4)
    assert measure.aggregate([measure.compare({"panoptic": ref}, {"panoptic": ref})]) == 100.0


def test_panoptic_segments_in_the_void_are_not_false_positives():
    offset, void = 1000, 5
    ref = np.full((4, 4), void)
    ref[:2] = 1
    pred = ref.copy()
    pred[2:, :3] = 3                        # 6 pixels, all in the stock void
    pred[3, 3] = 4                          # 1 pixel in the void
    stats = PanopticAgreement(void, offset).compare({"panoptic": pred}, {"panoptic": ref})
    assert dict(zip(stats["classes"], stats["fp"])) == {1: 0}


def test_instances_are_matched_by_mask_iou_above_the_threshold():
    masks = torch.zeros(3, 5, 5, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 3:] = True
    masks[2, :, :1] = True
    inst = BaseDataElement()
    inst.pred_instances = BaseDataElement(masks=masks, labels=torch.tensor([0, 1, 1]),
                                          scores=torch.tensor([0.9, 0.8, 0.1]))
    moved = masks.clone()
    moved[0, 2] = True                      # IoU 10 / 15 with the original
    other = BaseDataElement()
    other.pred_instances = BaseDataElement(masks=moved, labels=torch.tensor([0, 2, 1]),
                                           scores=torch.tensor([0.9, 0.8, 0.9]))
    measure = InstanceAgreement(score_thr=0.3)
    ref, pred = measure.extract(inst), measure.extract(other)
    assert ref["labels"].tolist() == [0, 1]               # the 0.1 instance is dropped
    stats = measure.compare(pred, ref)
    per = dict(zip(stats["classes"], zip(stats["tp"], stats["fp"], stats["fn"], stats["iou"])))
    assert per[0] == (1, 0, 0, pytest.approx(10 / 15))
    assert per[1] == (0, 1, 1, 0.0)                       # missed, and a new one
    assert per[2] == (0, 1, 0, 0.0)


def test_match_segments_with_nothing_on_one_side():
    empty = torch.zeros(0, 3, 3, dtype=torch.bool)
    one = torch.ones(1, 3, 3, dtype=torch.bool)
    stats = match_segments(empty, [], one, [7])
    assert stats == {"classes": [7], "tp": [0], "fp": [1], "fn": [0], "iou": [0.0]}
    stats = match_segments(one, [7], empty, [])
    assert stats == {"classes": [7], "tp": [0], "fp": [0], "fn": [1], "iou": [0.0]}


def test_depth_classification_and_embedding():
    depth = DepthAgreement()
    s, d = np.array([[1.0, 2.0], [4.0, 0.0]]), np.array([[1.5, 2.0], [3.0, 9.0]])
    stats = depth.compare({"depth": d}, {"depth": s})
    assert stats["pixels"] == 3                           # the zero stock depth is left out
    assert depth.aggregate([stats]) == pytest.approx(100 * (1 - (0.5 + 0 + 0.25) / 3))

    top1 = ClassificationAgreement()
    a = {"label": np.array([3])}
    assert top1.aggregate([top1.compare(a, a), top1.compare({"label": np.array([2])}, a)]) == 50.0

    cosine = EmbeddingAgreement()
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 1.0], [0.0, 1.0]])
    expected = (x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y)
    assert cosine.aggregate([cosine.compare({"embedding": y}, {"embedding": x})]) == \
        pytest.approx(100 * expected)


def test_agreement_for_picks_by_field():
    assert isinstance(agreement_for(seg_sample(np.zeros((2, 2), int))), SegmentationAgreement)
    sample = BaseDataElement()
    sample.pred_depth_map = PixelData(data=torch.ones(1, 2, 2))
    assert isinstance(agreement_for(sample), DepthAgreement)
    sample = BaseDataElement(pred_label=torch.tensor([1]))
    assert isinstance(agreement_for(sample), ClassificationAgreement)
    with pytest.raises(ValueError, match="no label-free agreement"):
        agreement_for(BaseDataElement(boxes=torch.zeros(1, 4)))
