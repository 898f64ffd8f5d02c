"""Input-channel smoothing of OpenVINO's form (compress/smooth.py): the FP32 function is unchanged, the spread
moves from the activations into the weights, and the form records what was smoothed."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.paddle  # the embedded model is a Paddle program (exported to ONNX first)


def test_factors_split_the_spread():
    from fastdet_cli.compress.smooth import factors

    r = np.array([0.01, 1.0, 100.0])
    w = [np.ones((2, 3, 1, 1))]
    for alpha in (0.5, 1.0):
        s = factors(r, w, alpha)
        assert np.isclose(np.exp(np.mean(np.log(s))), 1.0)  # geometric mean 1
        assert np.allclose(r / s, (r / s)[1] * (r / r[1]) ** (1 - alpha))  # spread of x/s: r^(1−α)
    assert np.allclose(factors(r, w, 1.0) * (r / factors(r, w, 1.0))[0], r)  # α 1: every channel the same range
    assert np.allclose(factors(r, [np.array([1.0, 2.0, 4.0]).reshape(1, 3, 1, 1)], 0.0), [2.0, 1.0, 0.5])


def test_smoothing_keeps_the_fp32_function(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fastdet_cli.artifacts import nms_free_onnx
    from fastdet_cli.compress.samples import FeedSamples, image_list
    from fastdet_cli.compress.smooth import smooth, smoothable
    from fastdet_cli.det.model import resolve_model

    fp32 = nms_free_onnx(resolve_model("default"))
    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(fp32.path), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    targets = smoothable(model)
    assert len(targets) > 10
    rng = np.random.default_rng(0)
    init = {i.name: i for i in model.graph.initializer}
    depthwise = {t for t, c in targets.items() if init[c[0].input[1]].dims[1] == 1}
    assert len(depthwise) == 4  # the neck's depthwise convolutions after a Concat (a range per channel cannot be
    # compiled there by OpenVINO: compress/depthwise.py)
    absmax = {t: rng.uniform(0.01, 10, size=init[c[0].input[1]].dims[0 if t in depthwise else 1])
              for t, c in targets.items()}
    assert smooth(model, absmax, 0.5) == len(targets)
    assert sum(n.op_type == "Mul" and n.name.endswith("_fastdet_smooth") for n in model.graph.node) == len(targets)
    onnx.checker.check_model(model)
    feed = FeedSamples(fp32, image_list("default", 1), [i.name for i in model.graph.input])[0]
    batch = {k: v[None] for k, v in feed.items()}
    before, after = (ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, batch)
                     for m in (pre.read_bytes(), model.SerializeToString()))
    for a, b in zip(before, after):
        assert np.allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(a).max())
