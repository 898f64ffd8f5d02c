"""Same model, same image → same boxes on ort, openvino and paddle, for every export kind."""
import numpy as np
import pytest

from fastdet_cli.artifacts import detector
from fastdet_cli.runtime.registry import BACKENDS

pytestmark = [pytest.mark.paddle, pytest.mark.openvino]


@pytest.mark.parametrize("kind", ["nms", "boxes_scores", "raw_heads"])
def test_backends_agree(tiny_models, sample_image, kind):
    results = {}
    for backend in ("paddle", "ort", "openvino"):
        with detector(tiny_models[kind], BACKENDS[backend]) as det:
            results[backend] = det(sample_image)
    ref = results["paddle"]
    assert len(ref) > 10  # the tiny model's spread weights give real work to NMS
    for backend in ("ort", "openvino"):
        got = results[backend]
        assert len(got) == len(ref), backend
        np.testing.assert_array_equal(got.class_ids, ref.class_ids)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-2, rtol=1e-4)


def test_export_kinds_agree_with_each_other(tiny_models, sample_image):
    """The three kinds of the same weights (same seed) decode to the same boxes; raw heads use the deploy
    config's NMS thresholds, so compare above its score threshold."""
    dets = {}
    for kind in ("boxes_scores", "raw_heads"):
        with detector(tiny_models[kind], BACKENDS["ort"]) as det:
            dets[kind] = det(sample_image)
    a, b = dets["boxes_scores"], dets["raw_heads"]
    assert len(a) and len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
