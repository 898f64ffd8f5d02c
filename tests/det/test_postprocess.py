import numpy as np
import pytest

from fastdet_cli.det.config import NmsParams
from fastdet_cli.det.postprocess import decode_pico_heads, from_nms_output, multiclass_nms


def _iou(a, b):
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def reference_nms(boxes, scores, p: NmsParams):
    """Greedy multiclass NMS written directly from Paddle's multiclass_nms3 description (a loop, not OpenCV)."""
    out = []
    for c in range(scores.shape[0]):
        if c == p.background_label:
            continue
        idx = np.where(scores[c] > p.score_threshold)[0]
        idx = idx[np.argsort(-scores[c][idx], kind="stable")][: p.nms_top_k]
        kept = []
        for i in idx:
            if not kept or np.all(_iou(boxes[i], boxes[kept]) <= p.nms_threshold):
                kept.append(i)
        out += [(scores[c][i], c, *boxes[i]) for i in kept]
    out.sort(key=lambda r: -r[0])
    return np.array(out[: p.keep_top_k]).reshape(-1, 6)


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_nms_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    m, c = 400, 4
    xy = rng.uniform(0, 200, (m, 2))
    wh = rng.uniform(5, 60, (m, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, (c, m)).astype(np.float32)
    p = NmsParams(score_threshold=0.3, nms_threshold=0.5, nms_top_k=150, keep_top_k=60)
    got = multiclass_nms(boxes, scores, p)
    ref = reference_nms(boxes, scores, p)
    assert len(got) == len(ref) > 10
    np.testing.assert_allclose(got.scores, ref[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(got.class_ids, ref[:, 1].astype(int))
    np.testing.assert_allclose(got.boxes, ref[:, 2:], rtol=1e-5)


def test_background_label_is_skipped_and_empty_input():
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    scores = np.array([[0.9], [0.8]], np.float32)
    det = multiclass_nms(boxes, scores, NmsParams(background_label=0, score_threshold=0.1))
    assert det.class_ids.tolist() == [1]
    assert len(multiclass_nms(boxes, scores * 0, NmsParams())) == 0


def test_from_nms_output_drops_padding_and_sorts():
    bbox = np.array([[1, 0.5, 0, 0, 5, 5], [0, 0.9, 1, 1, 4, 4], [-1, 0, 0, 0, 0, 0]], np.float32)
    det = from_nms_output(bbox, np.array([3], np.int32))
    assert det.scores.tolist() == pytest.approx([0.9, 0.5]) and det.class_ids.tolist() == [0, 1]


def test_decode_pico_heads_against_direct_formula():
    rng = np.random.default_rng(0)
    strides, hw, bins, c = [8, 16], (32, 48), 8, 3
    cls_list, reg_list = [], []
    for s in strides:
        n = (hw[0] // s) * (hw[1] // s)
        cls_list.append(rng.uniform(0, 1, (1, n, c)).astype(np.float32))
        reg_list.append(rng.normal(0, 2, (1, n, 4 * bins)).astype(np.float32))
    boxes, scores = decode_pico_heads(cls_list, reg_list, strides, hw)
    assert boxes.shape == (4 * 6 + 2 * 3, 4) and scores.shape == (c, 30)
    # cell (row 1, col 2) at stride 8 → index 1*6+2; check against an explicit softmax expectation
    k = 1 * 6 + 2
    logits = reg_list[0][0, k].reshape(4, bins)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    d = prob @ np.arange(bins)
    cx, cy = 2.5, 1.5
    np.testing.assert_allclose(boxes[k], np.array([cx - d[0], cy - d[1], cx + d[2], cy + d[3]]) * 8, rtol=1e-5)
    np.testing.assert_array_equal(scores[:, k], cls_list[0][0, k])
