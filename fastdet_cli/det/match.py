"""Matching two detection lists of the same image: same class, IoU ≥ a bound. Used to validate exports, to choose
Paddle's INT8 op set, and by `fastdet diff` (FP32 vs INT8)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastdet_cli.det.postprocess import Detections


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` [N, 4] with every box of `b` [M, 4] (x1, y1, x2, y2) → [N, M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Matching:
    """One-to-one matches between a reference list and another: (ref index, other index, IoU) pairs, the
    reference boxes left unmatched (`missed`) and the other list's boxes left unmatched (`extra`)."""

    pairs: list[tuple[int, int, float]] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)


def match(ref: Detections, other: Detections, iou_min: float = 0.5) -> Matching:
    """Greedy one-to-one matching as COCO does it: reference boxes in descending score order, each takes the
    unmatched box of `other` with the same class and the highest IoU, if that IoU ≥ `iou_min`."""
    iou = iou_matrix(ref.boxes, other.boxes)
    same = ref.class_ids[:, None] == other.class_ids[None, :]
    iou = np.where(same, iou, -1.0)
    out, taken = Matching(), np.zeros(len(other), bool)
    for i in np.argsort(-ref.scores, kind="stable"):
        cand = np.where(taken, -1.0, iou[i]) if len(other) else np.zeros(0)
        j = int(cand.argmax()) if len(cand) else -1
        if j >= 0 and cand[j] >= iou_min:
            taken[j] = True
            out.pairs.append((int(i), j, float(cand[j])))
        else:
            out.missed.append(int(i))
    out.extra = [int(j) for j in np.flatnonzero(~taken)]
    return out


def match_detections(det: Detections, ref: Detections, iou_min: float = 0.5,
                     min_score: float = 0.3) -> dict[str, float]:
    """How well two detection lists agree: the share of `ref` boxes (score ≥ min_score) that `det` finds with the
    same class at IoU ≥ iou_min (each `ref` box on its own: not one-to-one), and the largest score / coordinate
    difference among those matches."""
    keep = ref.scores >= min_score
    rb, rs, rc = ref.boxes[keep], ref.scores[keep], ref.class_ids[keep]
    if len(rb) == 0:
        return {"matched": 1.0, "score": 0.0, "boxes": 0.0}
    iou = np.where(rc[:, None] == det.class_ids[None, :], iou_matrix(rb, det.boxes), -1.0)
    matched, score_diff, box_diff = 0, 0.0, 0.0
    for i in range(len(rb)):
        if iou.shape[1] == 0:
            break
        k = int(iou[i].argmax())
        if iou[i, k] >= iou_min:
            matched += 1
            score_diff = max(score_diff, float(abs(det.scores[k] - rs[i])))
            box_diff = max(box_diff, float(np.abs(det.boxes[k] - rb[i]).max()))
    return {"matched": matched / len(rb), "score": score_diff, "boxes": box_diff}
