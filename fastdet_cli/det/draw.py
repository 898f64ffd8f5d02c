"""Drawing detections onto an image, and their JSON form."""
from __future__ import annotations

import numpy as np

from fastdet_cli.det.postprocess import Detections


def records(det: Detections, labels: list[str]) -> list[dict]:
    """One dict per box: class id, label, score, bbox [x1, y1, x2, y2] in original-image pixels."""
    return [{"class_id": int(c), "label": labels[c] if 0 <= c < len(labels) else str(int(c)),
             "score": round(float(s), 5), "bbox": [round(float(v), 2) for v in b]}
            for b, s, c in zip(det.boxes, det.scores, det.class_ids)]


def _colour(class_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(class_id + 17)
    return tuple(int(v) for v in rng.integers(64, 256, 3))


def label(out: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float) -> None:
    """`text` on a filled box of `colour` whose bottom-left corner is at (x, y) (kept inside the image), in black or
    white, whichever reads better on that colour: thin coloured text alone is lost on textured images."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(th + base + 2, y)
    x = max(0, min(x, out.shape[1] - tw - 3))  # a label at the right edge moves left, not off the image
    cv2.rectangle(out, (x, y - th - base - 2), (x + tw + 2, y), colour, -1)
    luma = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]  # BGR
    ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
    cv2.putText(out, text, (x + 1, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


def draw(bgr: np.ndarray, det: Detections, labels: list[str]) -> np.ndarray:
    import cv2

    out = bgr.copy()
    scale = max(0.35, min(out.shape[:2]) / 600)
    for rec in records(det, labels):
        x1, y1, x2, y2 = (int(round(v)) for v in rec["bbox"])
        col = _colour(rec["class_id"])
        cv2.rectangle(out, (x1, y1), (x2, y2), col, max(1, int(2 * scale)))
        label(out, f"{rec['label']} {rec['score']:.2f}", x1, y1, col, scale)
    return out
