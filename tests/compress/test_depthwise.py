"""Per-channel input ranges for depthwise convolutions in OpenVINO's INT8 form (compress/depthwise.py): where they
are written, that OpenVINO still runs every convolution in INT8, and that they are what keeps the embedded model's
accuracy (measured 2026-12-06, Zen 4: OpenVINO INT8 mAP 0.425 per tensor, 0.593 per channel, FP32 0.591)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastdet_cli.errors import FastdetError

pytestmark = pytest.mark.paddle  # the embedded model is a Paddle program (exported to ONNX first)


def _config(tmp_path, name: str, extra: str, deploy: str = "openvino", engine: str = "onnxruntime"):
    path = tmp_path / f"{name}.yaml"
    path.write_text("Global:\n  model_dir: default\n  format: paddle\n  ptq_image_path: default\n"
                    f"  engine: {engine}\n  deploy_backend: {deploy}\n"
                    f"PTQ:\n  calibration_method: {'percentile' if engine == 'onnxruntime' else 'hist'}\n"
                    "  batch_size: 4\n  batch_nums: 4\n" + extra)
    return path


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """The embedded model's OpenVINO form as made by default (per-channel depthwise inputs, smoothed regular
    convolutions), without the depthwise ranges, and without either."""
    from fastdet_cli.cli import main

    tmp = tmp_path_factory.mktemp("depthwise")
    out = {}
    for name, extra in (("channel", ""), ("tensor", "  depthwise_channel_ranges: false\n"),
                        ("plain", "  depthwise_channel_ranges: false\n  smooth_alpha: 0\n")):
        out[name] = tmp / name
        assert main(["compress", str(_config(tmp, name, extra)), "--save-dir", str(out[name])]) == 0
    return out


def _pairs(model_dir) -> tuple[dict, dict]:
    """({depthwise conv: its input's scale array}, {conv: whether its input comes after a Concat})."""
    import onnx
    from onnx import numpy_helper

    from fastdet_cli.compress.depthwise import after_concat
    from fastdet_cli.onnx_graph import constant_values

    m = onnx.load(str(model_dir / "model.onnx"))
    vals = constant_values(m.graph)
    producer = {o: n for n in m.graph.node for o in n.output}
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    scales, concat = {}, {}
    for n in m.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1:
            dq = producer[n.input[0]]
            assert dq.op_type == "DequantizeLinear"
            scales[n.name] = (init[dq.input[1]], next((a.i for a in dq.attribute if a.name == "axis"), 1), group)
            concat[n.name] = after_concat(producer[dq.input[0]].input[0], producer, vals)
    return scales, concat


def test_depthwise_inputs_get_a_range_per_channel(forms):
    channel, concat = _pairs(forms["channel"])
    tensor, _ = _pairs(forms["tensor"])
    assert len(channel) > 20 and set(channel) == set(tensor)
    per_channel = [c for c, (s, axis, group) in channel.items() if s.size == group and axis == 1]
    # every depthwise conv not fed by a Concat (OpenVINO's MoveFakeQuantize cannot split per-channel constants)
    assert sorted(per_channel) == sorted(c for c in channel if not concat[c]) and len(per_channel) > 20
    assert all(s.size == 1 for s, _, _ in tensor.values())
    for c in per_channel:  # one scale per channel, the widest the per-tensor one's size at most (min/max vs
        s = channel[c][0]  # percentile 99.99 of the tensor): finer for most channels
        assert np.median(s) < tensor[c][0] and np.all(s > 0)
    report = json.loads((forms["channel"] / "compress_report.json").read_text())["config_resolved"]
    assert report["depthwise_channel_ranges"] is True
    assert report["depthwise_channel_ranges_reason"] == "on (OpenVINO's form)"
    assert report["depthwise_channel_ranges_written"] == len(per_channel)
    assert report["smooth_alpha"] == 0.5 and report["smoothed_tensors"] > 10  # compress/smooth.py, by default


@pytest.mark.openvino
def test_openvino_runs_them_in_int8_and_keeps_the_accuracy(forms):
    from fastdet_cli.compress.variants import evaluate_map
    from fastdet_cli.data.dataset import resolve_eval_data
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.inspection import inspect_model
    from fastdet_cli.runtime.registry import BACKENDS

    ov = BACKENDS["openvino"]
    convs = {k: inspect_model(str(d), ov, runs=1).convs() for k, d in forms.items()}
    # (int8, float) convolutions: neither the depthwise ranges nor the smoothing leaves a convolution in float
    assert convs["channel"] == convs["tensor"] == convs["plain"] and convs["channel"][1] == 0, convs
    data = resolve_eval_data(None)
    fp32 = evaluate_map(resolve_model("default"), data, ov)
    maps = {k: evaluate_map(d, data, ov) for k, d in forms.items() if k != "plain"}
    # per tensor the embedded model loses 17 points on OpenVINO; per channel it keeps FP32's mAP (±0.5)
    assert fp32 - maps["channel"] <= max(0.005, 0.5 * (fp32 - maps["tensor"])), (fp32, maps)


def test_setting_per_form_and_engine(tmp_path):
    import dataclasses

    from fastdet_cli.compress.config import load_compress_config
    from fastdet_cli.compress.ort_quantize import quant_settings

    cfg = load_compress_config(_config(tmp_path, "ov", ""))
    assert quant_settings(cfg)["depthwise_channel_ranges"] is True
    ort = quant_settings(dataclasses.replace(cfg, deploy_backend="onnxruntime"))
    assert ort["depthwise_channel_ranges"] is False and "one activation scale per tensor" in \
        ort["depthwise_channel_ranges_reason"]
    asked = load_compress_config(_config(tmp_path, "asked", "  depthwise_channel_ranges: true\n", "onnxruntime"))
    s = quant_settings(asked)
    assert s["depthwise_channel_ranges"] is False and s["depthwise_channel_ranges_reason"].startswith("off: asked")
    assert quant_settings(cfg)["smooth_alpha"] == 0.5 and ort["smooth_alpha"] is None
    off = load_compress_config(_config(tmp_path, "off", "  smooth_alpha: 0\n"))
    assert quant_settings(off)["smooth_alpha"] is None
    with pytest.raises(FastdetError, match="PTQ.smooth_alpha must be between 0 \\(off\\) and 1, got 1.5"):
        load_compress_config(_config(tmp_path, "big", "  smooth_alpha: 1.5\n"))
    with pytest.raises(FastdetError, match="PTQ.depthwise_channel_ranges applies to engine onnxruntime only"):
        load_compress_config(_config(tmp_path, "slim", "  depthwise_channel_ranges: true\n", "onnxruntime",
                                     "paddleslim"))


def test_channel_pair_holds_zero_and_floors_dead_channels():
    from fastdet_cli.compress.depthwise import channel_pair

    scale, zero = channel_pair(np.array([-0.375, 0.0, 0.5, 0.0]), np.array([6.0, 0.0, 2.0, 1e-9]))
    assert scale.dtype == np.float32 and zero.dtype == np.uint8
    assert np.isclose(scale[0], 6.375 / 255) and zero[0] == 15  # -0.375 → level 0 after the zero point
    assert np.isclose(scale[2], 2.0 / 255) and zero[2] == 0  # a range without 0 is widened to hold it
    assert scale[1] == scale[3] == np.float32(scale[0] / 256)  # all-zero channels: the floor, never 0
