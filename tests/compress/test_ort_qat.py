"""`fastdet compress` with engine onnxruntime and a QuantAware section, on the embedded model's OpenVINO form: the
PTQ model is trained (compress/qdq_qat.py), every epoch is measured on the held-back calibration images on OpenVINO,
and the model written is the best measured one — measured again here, it agrees as recorded — with every
convolution still INT8."""
from __future__ import annotations

import json

import numpy as np
import pytest

# slow (~2 min: PTQ with the calibration choice and bias correction, the learned rounding, then two epochs, each
# measured on OpenVINO);
# .ci/run runs it. The mechanics are tested fast on a tiny graph in test_qdq_qat.py
pytestmark = [pytest.mark.paddle, pytest.mark.openvino, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from fastdet_cli.cli import main

    tmp = tmp_path_factory.mktemp("ort_qat")
    config = tmp / "c.yaml"
    config.write_text("Global:\n  model_dir: default\n  format: paddle\n  engine: onnxruntime\n"
                      "  deploy_backend: openvino\n  qat_image_path: default\n  image_limit: 10\n"
                      "  qat_patience: 0\nQuantAware: {}\nTrainConfig:\n  epochs: 2\n")
    assert main(["compress", str(config), "--save-dir", str(tmp / "out")]) == 0
    return config, tmp / "out"


def test_every_epoch_is_measured_and_the_best_is_written(trained):
    from fastdet_cli.agreement import with_reference
    from fastdet_cli.compress import prepare
    from fastdet_cli.compress.variants import evaluate_map
    from fastdet_cli.data.dataset import ImageList
    from fastdet_cli.runtime.registry import BACKENDS

    config, out = trained
    report = json.loads((out / "compress_report.json").read_text())
    assert report["method"] == "qat" and report["engine"] == "onnxruntime"
    qat = report["config_resolved"]["qat"]
    history = qat["history"]
    # epoch 0: the PTQ model; 1: its learned rounding; 2–3: end-to-end training
    assert [h["epoch"] for h in history] == [0, 1, 2, 3] and history[1]["stage"] == "rounding"
    assert qat["rounding"]["convolutions"] > 50 and qat["rounding"]["weights_changed"] > 0
    assert all(h["agreement"] is not None and h["holdout_loss"] is not None for h in history)
    best = max(history, key=lambda h: (h["agreement"], -h["holdout_loss"]))
    assert qat["chosen_epoch"] == best["epoch"]
    if history[1]["holdout_loss"] >= history[0]["holdout_loss"]:  # the rounding not kept: training starts from
        assert qat["fp32_start_weights"] > 50  # the FP32 weights, not their grid points
    assert qat["learned_scales"] > 50  # the activations' scales are trained too (Global.qat_hold_scales: false)
    assert set(qat["distilled"].values()) == {"scores", "boxes"}  # the embedded export's decoded outputs
    job = prepare(config, "qat", out.parent / "job", log=lambda m: None)
    assert sorted(p.name for p in job.holdout) == sorted(report["config_resolved"]["holdout_images"])
    assert report["config_resolved"]["images_used"] == 10  # PTQ (epoch 0) calibrated on all 10, trained on 8
    data = with_reference(ImageList.of(job.holdout), job.source, BACKENDS["ort"])
    assert evaluate_map(out, data, BACKENDS["openvino"]) == pytest.approx(best["agreement"], abs=1e-3)


def test_trained_model_keeps_every_convolution_int8(trained):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(trained[1] / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    weights = [producer.get(c.input[1]) for c in convs]
    assert all(w is not None and w.op_type == "DequantizeLinear" and inits[w.input[0]].dtype == np.int8
               for w in weights)
