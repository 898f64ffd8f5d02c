"""Learned rounding (compress/rounding.py) on the tiny detector-shaped graph of test_qdq_qat: every convolution's
weights go to the floor or the ceiling of the FP32 weight (never further), in the quantizer's range, its sampled
outputs fit the FP32 ones better than with the nearest roundings, and (7-bit weights) ONNX Runtime running the
written graph on images it never saw is closer to FP32 than the PTQ graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_qdq_qat import _feeds, _ort, _tiny_detector

pytestmark = pytest.mark.paddle


def _quantized(tmp: Path, reduce_range: bool) -> tuple[Path, Path]:
    from ort_run import quantize_qdq

    _tiny_detector(tmp / "f.onnx")
    quantize_qdq(tmp / "f.onnx", tmp / "q.onnx", _feeds(8, 0), op_types_to_quantize=["Conv"],
                 reduce_range=reduce_range)
    return tmp / "f.onnx", tmp / "q.onnx"


def _weights(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if numpy_helper.to_array(i).dtype == np.int8}


def _error(fp32: Path, int8: Path, feeds: list[dict]) -> float:
    """Mean over images and outputs of ||y - y_fp32||² / ||y_fp32||²."""
    return float(np.mean([np.sum((a - b) ** 2) / np.sum(b ** 2) for f in feeds
                          for a, b in zip(_ort(int8, f), _ort(fp32, f))]))


@pytest.mark.parametrize("reduce_range", [False, True])
def test_learned_roundings_fit_better_and_stay_floor_or_ceiling(tmp_path, reduce_range):
    import onnx

    from fastdet_cli.compress.rounding import learn_roundings

    fp32, start = _quantized(tmp_path, reduce_range)
    model = onnx.load(str(start))
    before = _weights(model)
    record = learn_roundings(model, onnx.load(str(fp32)), _feeds(8, 0), iterations=300)
    after = _weights(model)
    assert record["convolutions"] == 4 and record["weights_changed"] > 0
    assert record["relative_error"] < record["relative_error_nearest"]
    for name, q in after.items():
        assert np.abs(q.astype(np.int32) - before[name]).max() <= 1  # the other neighbour, never further
        widest = np.abs(before[name].astype(np.int32)).max()
        assert np.abs(q.astype(np.int32)).max() <= widest  # 7-bit weights stay 7-bit
    if reduce_range:  # 7-bit weights: rounding matters more than the 8-bit activations' error here
        out = tmp_path / "r.onnx"
        onnx.save(model, str(out))
        unseen = _feeds(8, 7)
        assert _error(fp32, out, unseen) < _error(fp32, start, unseen)


def test_qat_measures_the_learned_rounding_as_epoch_1(tmp_path):
    """The rounding stage is epoch 1 of QAT, measured on the held-back images like an epoch; end-to-end training
    follows as epochs 2…; the written model is the best measured."""
    import shutil

    from test_qdq_qat import _Samples

    from fastdet_cli.compress.qdq_qat import train_qdq

    fp32, start = _quantized(tmp_path, False)
    model = tmp_path / "m.onnx"
    shutil.copyfile(start, model)
    record = train_qdq(model, fp32, _Samples(_feeds(8, 0)), _Samples(_feeds(4, 9)), None,
                       {"epochs": 2, "learning_rate": 0.03}, augment=False, log=lambda m: None, prepared=fp32,
                       learn_rounding=True)
    h = record["history"]
    assert [e["epoch"] for e in h] == [0, 1, 2, 3] and h[1]["stage"] == "rounding"
    assert record["rounding"]["weights_changed"] > 0
    assert h[1]["holdout_loss"] < h[0]["holdout_loss"]
    assert record["chosen_epoch"] == min(h, key=lambda e: e["holdout_loss"])["epoch"]


def test_a_rounding_that_raises_the_held_back_loss_is_not_kept(tmp_path, monkeypatch):
    """A rounding stage that made the model worse (here: every int8 weight's sign flipped) is measured, training
    goes on from the PTQ model, and with no epoch after it the PTQ integers are what is written."""
    import shutil

    import onnx
    from onnx import numpy_helper
    from test_qdq_qat import _Samples

    from fastdet_cli.compress import rounding
    from fastdet_cli.compress.qdq_qat import train_qdq

    def flipped(model, fp32_graph, feeds, progress=None):
        for init in model.graph.initializer:
            q = numpy_helper.to_array(init)
            if q.dtype == np.int8:
                init.CopyFrom(numpy_helper.from_array((-q.astype(np.int32)).clip(-127, 127).astype(np.int8),
                                                      init.name))
        return {"weights_changed": 1, "relative_error_nearest": 0.0, "relative_error": 1.0}

    monkeypatch.setattr(rounding, "learn_roundings", flipped)
    fp32, start = _quantized(tmp_path, False)
    model = tmp_path / "m.onnx"
    shutil.copyfile(start, model)
    record = train_qdq(model, fp32, _Samples(_feeds(8, 0)), _Samples(_feeds(4, 9)), None,
                       {"epochs": 0}, augment=False, log=lambda m: None, prepared=fp32, learn_rounding=True)
    h = record["history"]
    assert h[1]["stage"] == "rounding" and h[1]["holdout_loss"] > h[0]["holdout_loss"]
    assert record["chosen_epoch"] == 0
    written, ptq = _weights(onnx.load(str(model))), _weights(onnx.load(str(start)))
    assert written.keys() == ptq.keys() and all(np.array_equal(written[k], ptq[k]) for k in ptq)
