"""Calibration statistics gathered once (compress/calibration.py): the ranges handed to ONNX Runtime's quantizer
are the ones its own calibrators compute, for all the images or either half, and one pass over the images serves
every calibration tried and every form whose tensors it covers."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytestmark = pytest.mark.paddle  # the embedded model is a Paddle program (exported to ONNX first)


def _scales(path) -> dict[str, float]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: float(init[n.input[1]]) for n in m.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in init and init[n.input[1]].size == 1}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fastdet_cli.artifacts import nms_free_onnx
    from fastdet_cli.compress import prepare
    from fastdet_cli.compress.ort_quantize import post_conv_nodes

    tmp = tmp_path_factory.mktemp("stats")
    config = tmp / "c.yaml"
    config.write_text("Global:\n  model_dir: default\n  format: paddle\n  engine: onnxruntime\n"
                      "  deploy_backend: onnxruntime\n  ptq_image_path: default\n"
                      "PTQ:\n  calibration_method: percentile\n  batch_size: 3\n  batch_nums: 2\n")
    job = prepare(config, "ptq", tmp / "out", log=lambda m: None)
    pre = tmp / "pre.onnx"
    quant_pre_process(str(nms_free_onnx(job.source).path), str(pre), skip_symbolic_shape=True)
    return job, pre, post_conv_nodes(pre), tmp


@pytest.mark.parametrize("method", ["MinMax", "Percentile"])
def test_shared_ranges_are_the_quantizers_own(prepared, method):
    from fastdet_cli.compress.calibration import Statistics
    from fastdet_cli.compress.ort_quantize import quant_settings, quantize

    job, pre, post, tmp = prepared
    settings = quant_settings(job.cfg)
    settings["calibrate_method"] = method
    settings.pop("percentile", None)
    if method == "Percentile":
        settings["percentile"] = 99.99
    own, shared = tmp / f"own_{method}.onnx", tmp / f"shared_{method}.onnx"
    quantize(pre, own, job.samples, settings, post)
    stats = Statistics(job.samples, log=lambda m: None)
    quantize(pre, shared, job.samples, settings, post, stats=stats)
    a, b = _scales(own), _scales(shared)
    assert set(a) == set(b) and len(a) > 20
    ratio = np.array([b[k] / a[k] for k in a])
    # MinMax: the same numbers; Percentile: ORT bins all images at once, the statistics one half after the other
    # (the bin edges move by at most a bin)
    assert np.abs(ratio - 1).max() <= (1e-6 if method == "MinMax" else 0.02), ratio
    assert not list(tmp.glob("*.ranges.json"))  # the cache handed to ORT is removed


def test_one_pass_serves_halves_calibrations_and_forms(prepared):
    from fastdet_cli.compress.calibration import Statistics
    from fastdet_cli.compress.config import DEPLOY_TARGETS
    from fastdet_cli.compress.ort_quantize import quant_settings

    job, pre, post, tmp = prepared
    stats = Statistics(job.samples, log=lambda m: None)
    assert stats.parts == ([0, 1, 2], [3, 4, 5])
    ort = quant_settings(job.cfg)
    ov = quant_settings(dataclasses.replace(job.cfg, deploy_backend="openvino"))
    assert DEPLOY_TARGETS["openvino"].conv_outputs is False and ov["op_types_to_quantize"] == ["Conv"]
    full = stats.ranges(pre, ort["op_types_to_quantize"], False, "MinMax")
    halves = [stats.ranges(pre, ort["op_types_to_quantize"], False, "MinMax", part=k) for k in (0, 1)]
    for p in (99.9, 99.999):
        stats.ranges(pre, ort["op_types_to_quantize"], False, "Percentile", p, part=1)
    conv_only = stats.ranges(pre, ov["op_types_to_quantize"], False, "Percentile", 99.99)
    assert stats.gathered == 1  # one pass over the images for all of it
    assert set(conv_only.keys()) < set(full.keys())
    some = next(t for t in full.keys() if t != "image")
    lows = [h[some].range_value[0] for h in halves]
    highs = [h[some].range_value[1] for h in halves]
    # all the images' range is the union of the halves' (MinMax), and the halves differ: they are different images
    assert full[some].range_value[0] == min(lows) and full[some].range_value[1] == max(highs)
    assert any(halves[0][t].range_value != halves[1][t].range_value for t in full.keys())
    # another graph kind (symmetric ranges, TensorRT's) is gathered on its own
    stats.ranges(pre, ort["op_types_to_quantize"], True, "MinMax")
    assert stats.gathered == 2


def test_channel_ranges_come_from_the_same_pass(prepared):
    """Per-channel min/max (compress/depthwise.py's ranges) from the pass that gathers the histograms: the widest
    channel is the tensor's MinMax range, all the images' ranges are the union of the halves'."""
    from fastdet_cli.compress.calibration import Statistics
    from fastdet_cli.compress.ort_quantize import quant_settings

    job, pre, post, tmp = prepared
    stats = Statistics(job.samples, log=lambda m: None)
    ops = quant_settings(job.cfg)["op_types_to_quantize"]
    full = stats.ranges(pre, ops, False, "MinMax")
    channels = stats.channel_ranges(pre, ops, full.keys())  # the 4-D (NCHW) ones
    assert len(channels) > 20 and set(channels) <= set(full.keys())
    some = sorted(t for t in channels if t != "image")[:5]
    halves = [stats.channel_ranges(pre, ops, some, part=k) for k in (0, 1)]
    assert stats.gathered == 1
    for t in some:
        lo, hi = channels[t]
        assert lo.ndim == 1 and lo.shape == hi.shape and lo.size > 1 and np.all(lo <= hi)
        assert np.isclose(lo.min(), full[t].range_value[0]) and np.isclose(hi.max(), full[t].range_value[1])
        assert np.array_equal(lo, np.minimum(halves[0][t][0], halves[1][t][0]))
        assert np.array_equal(hi, np.maximum(halves[0][t][1], halves[1][t][1]))
