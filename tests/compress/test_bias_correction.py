"""Bias correction (compress/bias_correction.py): after it, each INT8 convolution's mean output per channel on the
calibration images is FP32's, the graph keeps its integer form (ORT still fuses QLinearConv, OpenVINO still runs
every convolution in INT8), and the setting is on by default for engine onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from fastdet_cli.errors import FastdetError

pytestmark = pytest.mark.paddle  # the embedded model is a Paddle program (exported to ONNX first)


@pytest.fixture(scope="module")
def uncorrected(tmp_path_factory):
    """The embedded model's two forms without bias correction, its prepared FP32 graph and calibration feeds."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fastdet_cli.artifacts import nms_free_onnx
    from fastdet_cli.cli import main
    from fastdet_cli.compress import prepare

    tmp = tmp_path_factory.mktemp("bias")
    config = tmp / "c.yaml"
    config.write_text("Global:\n  model_dir: default\n  format: paddle\n  engine: onnxruntime\n"
                      "  deploy_backend: [onnxruntime, openvino]\n  ptq_image_path: default\n"
                      "PTQ:\n  calibration_method: percentile\n  batch_size: 4\n  batch_nums: 2\n"
                      "  bias_correction: false\n  smooth_alpha: 0\n")
    assert main(["compress", str(config), "--save-dir", str(tmp / "out")]) == 0
    job = prepare(config, "ptq", tmp / "job", log=lambda m: None)
    pre = tmp / "pre.onnx"
    quant_pre_process(str(nms_free_onnx(job.source).path), str(pre), skip_symbolic_shape=True)
    feeds = [{k: v[None] for k, v in job.samples[i].items()} for i in range(4)]
    return tmp / "out", pre, feeds


def _shifts(model, pre, feeds) -> np.ndarray:
    """Mean |INT8 − FP32| of each quantized convolution's per-channel mean output on `feeds`."""
    import onnx

    from fastdet_cli.compress.bias_correction import _with_outputs, channel_means, quantized_convs
    from fastdet_cli.compress.sensitivity import session

    outputs = [c.output[0] for c in quantized_convs(model)]
    with session(_with_outputs(onnx.load(str(pre)), outputs)) as a, session(_with_outputs(model, outputs)) as b:
        ref, got = channel_means(a.session, outputs, feeds), channel_means(b.session, outputs, feeds)
    return np.array([np.abs(got[o] - ref[o]).mean() for o in outputs])


@pytest.mark.parametrize("form", ["onnxruntime", "openvino"])
def test_corrected_means_are_fp32s(uncorrected, form):
    import onnx

    from fastdet_cli.compress.bias_correction import correct_biases, quantized_convs

    out, pre, feeds = uncorrected
    model = onnx.load(str(out / form / "model.onnx"))
    n_conv = sum(n.op_type == "Conv" for n in model.graph.node)
    before = _shifts(model, pre, feeds)
    record = correct_biases(model, onnx.load(str(pre)), feeds)
    onnx.checker.check_model(model)
    after = _shifts(model, pre, feeds)
    assert record["convolutions"] == len(quantized_convs(model)) > 20 and 1 < record["steps"] < record["convolutions"]
    assert 0 < record["mean_shift_corrected"] < before.mean()  # each one's own, upstream already corrected
    # what is left: the int32 rounding of the biases and float32 sums — far below the shift corrected
    assert after.mean() < 0.05 * before.mean() and after.max() < 0.2 * before.max(), (before.mean(), after.mean())
    assert sum(n.op_type == "Conv" for n in model.graph.node) == n_conv
    assert not {i.name for i in model.graph.input} - {"image", "im_shape", "scale_factor"}  # no bias left as input


def test_the_integer_form_survives(uncorrected, tmp_path):
    """ORT still fuses every quantized convolution into QLinearConv; OpenVINO still runs them all in INT8."""
    import shutil

    import onnx

    from fastdet_cli.compress.bias_correction import correct_biases
    from fastdet_cli.inspection import inspect_model
    from fastdet_cli.runtime.registry import BACKENDS

    out, pre, feeds = uncorrected
    counts = {}
    for form, backend in (("onnxruntime", "ort"), ("openvino", "openvino")):
        fixed = tmp_path / form
        shutil.copytree(out / form, fixed)
        model = onnx.load(str(fixed / "model.onnx"))
        correct_biases(model, onnx.load(str(pre)), feeds[:2])
        onnx.save(model, str(fixed / "model.onnx"))
        counts[form] = [inspect_model(str(d), BACKENDS[backend], runs=1).convs() for d in (out / form, fixed)]
        assert counts[form][0] == counts[form][1], counts  # (int8, float) convolutions before and after
    assert counts["onnxruntime"][1][0] > 20 and counts["openvino"][1][1] == 0, counts


def test_setting(tmp_path):
    from fastdet_cli.compress.config import load_compress_config
    from fastdet_cli.compress.ort_quantize import quant_settings

    def config(extra: str, engine: str = "onnxruntime"):
        path = tmp_path / f"c{abs(hash(extra + engine))}.yaml"
        path.write_text("Global:\n  model_dir: default\n  format: paddle\n  ptq_image_path: default\n"
                        f"  engine: {engine}\nPTQ:\n  calibration_method: "
                        f"{'percentile' if engine == 'onnxruntime' else 'hist'}\n" + extra)
        return path

    assert quant_settings(load_compress_config(config("")))["bias_correction"] is True
    assert quant_settings(load_compress_config(config("  bias_correction: false\n")))["bias_correction"] is False
    with pytest.raises(FastdetError, match="PTQ.bias_correction applies to engine onnxruntime only"):
        load_compress_config(config("  bias_correction: true\n", "paddleslim"))
