"""Post-processing for the three kinds of PaddleDetection export.

- ``nms``: NMS inside the model → outputs ``bbox`` [N, 6] = (class, score, x1, y1, x2, y2) in original-image
  pixels, plus ``bbox_num``.
- ``boxes_scores``: NMS removed → ``boxes`` [1, M, 4] and ``scores`` [1, C, M]; multiclass NMS runs here with
  the model's own parameters. Boxes are already in original pixels when the model takes ``scale_factor``,
  else (ppdet's ``export.nms=False``) they are in network-input pixels and are rescaled here.
- ``raw_heads``: PicoDet with ``export.post_process=False`` → per stride, class scores [1, HW, C] and
  distribution bins [1, HW, 4·(reg_max+1)]; decoded here with ``fpn_stride``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastdet_cli.det.config import NmsParams
from fastdet_cli.errors import FastdetError


@dataclass(frozen=True)
class Detections:
    """Boxes in original-image pixels (x1, y1, x2, y2), scores and class ids, sorted by score."""

    boxes: np.ndarray  # [K, 4] float32
    scores: np.ndarray  # [K] float32
    class_ids: np.ndarray  # [K] int64

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> Detections:
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.class_ids[keep])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, p: NmsParams) -> Detections:
    """Paddle's multiclass_nms3 for one image: per class, candidates above score_threshold, the best nms_top_k,
    greedy IoU suppression; then the best keep_top_k over all classes. boxes [M, 4], scores [C, M].

    The per-class step is OpenCV's NMSBoxes (same candidate selection and greedy rule). Paddle's
    `normalized=False` adds one pixel to widths and heights; that is applied by widening the boxes."""
    import cv2

    if p.nms_eta != 1.0:
        raise FastdetError("adaptive NMS (nms_eta != 1) is not supported")
    pad = 0.0 if p.normalized else 1.0
    keep_boxes, keep_scores, keep_cls = [], [], []
    for c in range(scores.shape[0]):
        if c == p.background_label:
            continue
        sc = scores[c]
        # only this class's candidates go to OpenCV (the same set it would select itself), so the per-class
        # call sees tens of boxes, not all M
        cand = np.flatnonzero(sc > p.score_threshold)
        if cand.size == 0:
            continue
        if 0 < p.nms_top_k < cand.size:
            cand = cand[np.argsort(-sc[cand], kind="stable")[: p.nms_top_k]]
        b = boxes[cand].astype(np.float64)
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2] + pad], axis=1)
        idx = cv2.dnn.NMSBoxes(xywh, sc[cand].astype(np.float32), float(p.score_threshold),
                               float(p.nms_threshold), 1.0, 0)
        idx = cand[np.asarray(idx, np.int64).reshape(-1)]
        keep_boxes.append(boxes[idx])
        keep_scores.append(sc[idx])
        keep_cls.append(np.full(len(idx), c, np.int64))
    if not keep_scores:
        return Detections.empty()
    b, s, k = np.concatenate(keep_boxes), np.concatenate(keep_scores), np.concatenate(keep_cls)
    order = np.argsort(-s, kind="stable")
    if p.keep_top_k > 0:
        order = order[: p.keep_top_k]
    return Detections(b[order].astype(np.float32), s[order].astype(np.float32), k[order])


def from_nms_output(bbox: np.ndarray, bbox_num: np.ndarray | None) -> Detections:
    """Decode the [N, 6] output of an in-graph multiclass_nms3 (first image only)."""
    n = int(bbox_num.reshape(-1)[0]) if bbox_num is not None else len(bbox)
    bbox = bbox[:n].reshape(-1, 6)
    valid = bbox[:, 0] >= 0  # Paddle pads with class -1 when nothing is found
    bbox = bbox[valid]
    order = np.argsort(-bbox[:, 1], kind="stable")
    bbox = bbox[order]
    return Detections(bbox[:, 2:6].astype(np.float32), bbox[:, 1].astype(np.float32), bbox[:, 0].astype(np.int64))


def decode_pico_heads(cls_list: list[np.ndarray], reg_list: list[np.ndarray], strides: list[int],
                      input_hw: tuple[int, int], cell_offset: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """PicoDet raw heads → boxes [M, 4] in network-input pixels and scores [C, M]."""
    if len(cls_list) != len(strides) or len(reg_list) != len(strides):
        raise FastdetError(f"raw PicoDet heads: {len(cls_list)} score and {len(reg_list)} box outputs "
                           f"for {len(strides)} strides in fpn_stride")
    all_boxes, all_scores = [], []
    for cls, reg, stride in zip(cls_list, reg_list, strides):
        h, w = -(-input_hw[0] // stride), -(-input_hw[1] // stride)
        cls, reg = cls.reshape(-1, cls.shape[-1]), reg.reshape(-1, reg.shape[-1])
        if cls.shape[0] != h * w:
            raise FastdetError(f"raw PicoDet head at stride {stride}: {cls.shape[0]} cells, expected {h}x{w}")
        bins = reg.shape[-1] // 4
        logits = reg.reshape(-1, 4, bins)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        dist = (e / e.sum(axis=-1, keepdims=True)) @ np.arange(bins, dtype=np.float32)  # [HW, 4] in cells
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        cx, cy = xs.reshape(-1) + cell_offset, ys.reshape(-1) + cell_offset
        box = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1) * stride
        all_boxes.append(box)
        all_scores.append(cls)
    return np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).T.astype(np.float32)


def raw_head_strides(outs: list[np.ndarray], input_hw: tuple[int, int]) -> list[int] | None:
    """The strides of raw PicoDet head outputs (scores [1, HW, C] × n, then boxes [1, HW, 4·bins] × n), from the
    network input size and each head's cell count, for deploy configs without `fpn_stride`; None when the
    outputs are not raw heads or a head's cell count fits no power-of-two stride."""
    if len(outs) < 2 or len(outs) % 2 or any(o.ndim != 3 for o in outs):
        return None
    n = len(outs) // 2
    cls, reg = outs[:n], outs[n:]
    if len({o.shape[-1] for o in cls}) != 1 or any(r.shape[-1] % 4 for r in reg) or any(
            c.shape[1] != r.shape[1] for c, r in zip(cls, reg)):
        return None
    h, w = (int(v) for v in input_hw)
    strides = []
    for c in cls:
        fit = [s for s in (4, 8, 16, 32, 64, 128, 256) if -(-h // s) * -(-w // s) == c.shape[1]]
        if not fit:
            return None
        strides.append(fit[0])
    return strides


def rescale(boxes: np.ndarray, scale_factor: np.ndarray) -> np.ndarray:
    """Network-input pixels → original pixels (scale_factor is [scale_y, scale_x])."""
    sy, sx = float(scale_factor[0]), float(scale_factor[1])
    return boxes / np.array([sx, sy, sx, sy], np.float32)

