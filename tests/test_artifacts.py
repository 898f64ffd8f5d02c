"""artifacts.py: what each backend runs. INT8 artifacts classified (`describe`) and chosen by each backend's
preference (`choose`), also among the forms of one compress folder (`forms`, `describe_all`, `form_for`); the ONNX
form of a model (`onnx_for`) and its NMS-free form (`nms_free_onnx`), on the embedded model and on an export that
keeps NMS in the graph."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from fastdet_cli.artifacts import (budget_warning, choose, describe, describe_all, detector, for_backend, form_for,
                                   forms, is_quantized, nms_free_onnx, onnx_for)
from fastdet_cli.det.model import resolve_model
from fastdet_cli.errors import FastdetError, UnsupportedMode
from fastdet_cli.paths import DEFAULT_MODEL_DIR
from fastdet_cli.runtime.registry import BACKENDS

ORT, OPENVINO, PADDLE, TRT, PADDLE_TRT = (BACKENDS[n] for n in ("ort", "openvino", "paddle", "trt", "paddle-trt"))


def _qdq_onnx(path, quantized: bool = True):
    """A small real ONNX graph: Conv on a [1,3,192,192] image, its input through QuantizeLinear/DequantizeLinear
    when `quantized`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    nodes, x = [], "image"
    if quantized:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(128, np.uint8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node("Conv", [x, "w"], ["out"], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                         [1, 3, 192, 192])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 192, 192])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def _model_dir(path, sidecar: dict | None = None, report: dict | None = None, quantized: bool = True):
    path.mkdir(parents=True)
    _qdq_onnx(path / "model.onnx", quantized)
    shutil.copy2(DEFAULT_MODEL_DIR / "infer_cfg.yml", path / "infer_cfg.yml")
    if sidecar is not None:
        (path / "fastdet.yml").write_text(yaml.safe_dump(sidecar))
    if report is not None:
        (path / "compress_report.json").write_text(json.dumps(report))
    return path


def _multi_form(root, order=("onnxruntime", "openvino", "tensorrt")):
    """A folder as one `fastdet compress` (engine onnxruntime) writes for several deploy targets."""
    for target in order:
        _model_dir(root / target, {"engine": "onnxruntime", "target": target, "quantized": True},
                   {"method_label": "PTQ (ORT)"})
    (root / "compress_report.json").write_text(json.dumps({
        "method_label": "PTQ (ORT)", "model_fp32": "default", "forms": {t: {"dir": t} for t in order}}))
    return root


# --- describe: which kind of INT8 model is this ---

def test_describe_classifies_onnx_by_engine_and_flavour(tmp_path):
    ort = describe(_model_dir(tmp_path / "ort", {"engine": "onnxruntime", "target": "onnxruntime"},
                              {"method_label": "PTQ (ORT)"}))
    assert (ort.kind, ort.target, ort.method, ort.warning) == ("ort-qdq", "onnxruntime", "PTQ (ORT)", None)
    # the onnxruntime engine's OpenVINO form has Q/DQ on convolution inputs only: an INT8 ONNX like any other
    assert describe(_model_dir(tmp_path / "ov", {"engine": "onnxruntime", "target": "openvino"})).kind == "onnx-qdq"
    assert describe(_model_dir(tmp_path / "trt", {"engine": "onnxruntime", "target": "tensorrt"})).target == "tensorrt"
    given = describe(_model_dir(tmp_path / "given"))  # no sidecar, no report
    assert (given.kind, given.target, given.method) == ("onnx-qdq", "onnxruntime", "INT8 (given)")
    assert given.path == tmp_path / "given"


def test_describe_refuses_an_fp32_model(tmp_path):
    fp32 = _model_dir(tmp_path / "fp32", quantized=False)
    assert not is_quantized(resolve_model(fp32))
    with pytest.raises(FastdetError, match=r"is not a quantized model \(no quantize ops\): compress it first"):
        describe(fp32)
    with pytest.raises(FastdetError, match="is not a quantized model"):
        describe("default")  # the embedded model is FP32
    # a sidecar that says "quantized" (e.g. integer ops other than QuantizeLinear) is believed
    assert is_quantized(resolve_model(_model_dir(tmp_path / "said", {"quantized": True}, quantized=False)))


def test_a_missed_accuracy_budget_is_carried_as_a_warning(tmp_path):
    search = {"chosen_drop_points": 2.4, "max_drop_points": 1.0, "dataset": "/data/coco/val2017",
              "stopped": "budget of 20 candidates spent"}
    d = _model_dir(tmp_path / "missed", {"engine": "onnxruntime"}, {"met": False, "sensitivity_search": search})
    warning = describe(d).warning
    assert warning == ("warning: missed missed the accuracy budget it was compressed for: mAP drop 2.4 points > 1.0 "
                       "on val2017 (budget of 20 candidates spent); it is the best model found "
                       "(compress_report.json: met false)")
    assert budget_warning(d, name="my model").startswith("warning: my model missed")
    met = _model_dir(tmp_path / "met", None, {"met": True, "sensitivity_search": search})
    assert budget_warning(met) is None and describe(met).warning is None
    assert budget_warning(_model_dir(tmp_path / "no_search", None, {"method_label": "PTQ"})) is None


# --- choose: each backend's preferred kind ---

def test_each_backend_takes_its_own_form_of_a_multi_form_folder(tmp_path):
    out = _multi_form(tmp_path / "int8")
    assert forms(out) == {t: out / t for t in ("onnxruntime", "openvino", "tensorrt")}
    arts = describe_all(out)
    assert [(a.kind, a.target) for a in arts] == [("ort-qdq", "onnxruntime"), ("onnx-qdq", "openvino"),
                                                  ("ort-qdq", "tensorrt")]
    assert choose(ORT, arts).path == out / "onnxruntime"  # its own QDQ graph: integer kernels
    assert choose(OPENVINO, arts).path == out / "openvino"  # prefers Q/DQ on convolution inputs
    assert choose(TRT, arts).path == out / "tensorrt"  # loads only its own flavour
    assert form_for(out, OPENVINO) == out / "openvino" and form_for(out, TRT) == out / "tensorrt"
    for spec in (PADDLE, PADDLE_TRT):  # a Paddle backend runs none of them: a "None" cell, saying why
        with pytest.raises(UnsupportedMode, match=rf"^{spec.name} runs a PaddleSlim program; given: INT8 ONNX, "
                                                  "ORT-quantized ONNX$"):
            choose(spec, arts)


def test_tensorrt_refuses_the_other_flavours(tmp_path):
    arts = describe_all(_multi_form(tmp_path / "int8", order=("onnxruntime", "openvino")))
    with pytest.raises(UnsupportedMode, match="^trt runs a PaddleSlim program or INT8 ONNX or ORT-quantized ONNX"):
        choose(TRT, arts)
    with pytest.raises(UnsupportedMode, match="given: none"):
        choose(ORT, [])


def test_ort_takes_its_own_flavour_whatever_the_order_of_the_forms(tmp_path):
    out = _multi_form(tmp_path / "int8", order=("tensorrt", "onnxruntime"))
    assert choose(ORT, describe_all(out)).path == out / "onnxruntime"


def test_a_single_model_and_malformed_reports_are_no_forms(tmp_path):
    single = _model_dir(tmp_path / "single", {"engine": "onnxruntime", "target": "onnxruntime"}, {"met": True})
    assert forms(single) == {} and forms("default") == {} and forms(resolve_model(single)) == {}
    assert [a.path for a in describe_all(single)] == [single]
    assert form_for(single, OPENVINO) == single  # not a multi-form folder: the model as given
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "compress_report.json").write_text("{not json")
    assert forms(tmp_path / "bad") == {}
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "compress_report.json").write_text("[1, 2]")
    assert forms(tmp_path / "list") == {}


@pytest.mark.paddle
def test_a_paddleslim_program_is_what_paddle_and_openvino_prefer(tmp_path, default_ptq):
    program = describe(default_ptq)
    assert (program.kind, program.target) == ("paddle-program", "any")
    assert is_quantized(resolve_model(default_ptq)) and not is_quantized(resolve_model("default"))
    arts = describe_all(_multi_form(tmp_path / "int8")) + [program]
    assert choose(PADDLE, arts) is program and choose(PADDLE_TRT, arts) is program
    assert choose(OPENVINO, arts) is program and choose(TRT, arts) is program  # exported in any flavour
    assert choose(ORT, arts).kind == "ort-qdq"  # ORT runs a PaddleSlim export in float: its own QDQ first


# --- the ONNX form a backend loads ---

def test_onnx_for_an_onnx_model_is_the_model_itself(tmp_path):
    src = resolve_model(_model_dir(tmp_path / "m", quantized=False) / "model.onnx")
    assert onnx_for(src) is src and onnx_for(src, "tensorrt") is src
    assert for_backend(src, ORT) is src and for_backend(src, OPENVINO) is src
    with pytest.raises(FastdetError, match=r"^backend 'paddle' runs Paddle models; .*model.onnx is ONNX$"):
        for_backend(src, PADDLE)


@pytest.mark.paddle
def test_onnx_for_a_paddle_model_is_its_cached_nms_free_export(fastdet_cache):
    import onnx

    default = resolve_model("default")
    assert for_backend(default, PADDLE) is default  # a Paddle backend loads the program as it is
    exported = onnx_for(default)
    assert exported.format == "onnx" and exported.dir.parent == fastdet_cache / "exports"
    assert exported.dir.name.startswith(default.content_hash()[:24])
    assert not any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(exported.path)).graph.node)
    assert exported.sidecar()["nms_removed"] is True
    stamp = exported.path.stat().st_mtime_ns
    again = for_backend(default, ORT)  # cached: the same export, not made again
    assert again.path == exported.path and again.path.stat().st_mtime_ns == stamp
    assert nms_free_onnx(default).path == exported.path  # nothing left to cut


@pytest.mark.paddle
def test_nms_free_onnx_cuts_a_graph_that_holds_nms(tmp_path, monkeypatch):
    import onnx

    from fastdet_cli.data.synth import render_image
    from fastdet_cli.det.match import match_detections
    from fastdet_cli.export.onnx import EXPORT_VERSION, export_onnx

    kept = export_onnx(resolve_model("default"), tmp_path / "with_nms", remove_nms=False)
    with_nms = resolve_model(kept.onnx_path)
    assert any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(with_nms.path)).graph.node)
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))  # the cut is made here, not found in a cache
    cut = nms_free_onnx(with_nms)
    assert cut.dir == tmp_path / "cache" / "exports" / f"{with_nms.content_hash()[:24]}-cut-v{EXPORT_VERSION}"
    assert not any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(cut.path)).graph.node)
    nms = cut.sidecar()["nms"]
    assert nms["score_threshold"] == pytest.approx(0.025) and nms["nms_threshold"] == pytest.approx(0.6)
    assert nms_free_onnx(with_nms).path == cut.path  # cached by content
    # the cut graph with host NMS finds what the graph's own NMS found, on a generated scene
    image, _ = render_image(np.random.default_rng(3))
    with detector(with_nms, ORT) as a, detector(cut, ORT) as b:
        ref, got = a(image), b(image)
    assert len(ref.above(0.3)) > 0
    agree = match_detections(got, ref)
    assert agree["matched"] == 1.0 and agree["score"] < 1e-4
