"""The onnxruntime compression engine: ONNX Runtime's quantizer on the FP32 export, run as INT8 by ORT."""
import json
from pathlib import Path

import numpy as np
import pytest

from fastdet_cli.compress.config import load_compress_config
from fastdet_cli.errors import FastdetError
from fastdet_cli.paths import DEFAULT_PTQ_ORT_CONFIG
from fastdet_cli.runtime.registry import BACKENDS


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,engine,match", [
    ("Global: {model_dir: m, engine: tensorflow}\nPTQ: {}\n", None, "Global.engine: unknown engine 'tensorflow'"),
    ("Global: {model_dir: m}\nPTQ: {}\n", "ort", "--engine: unknown engine 'ort'"),
    ("Global: {model_dir: m, engine: onnxruntime}\nPTQ: {calibration_method: avg}\n", None,
     "'avg' has no ONNX Runtime counterpart"),
    ("Global: {model_dir: m}\nPTQ: {per_channel: false}\n", None, "PTQ.per_channel applies to engine onnxruntime"),
])
def test_bad_engine_settings_are_one_line_errors(tmp_path, text, engine, match):
    with pytest.raises(FastdetError, match=match) as e:
        load_compress_config(write(tmp_path, text), engine)
    assert "\n" not in str(e.value)


def test_engine_from_option_overrides_config_and_names_map(tmp_path):
    from fastdet_cli.compress.config import ort_method
    from fastdet_cli.compress.ort_quantize import ort_op_types, quant_settings

    cfg = load_compress_config(write(tmp_path, "Global: {model_dir: m}\nPTQ: {calibration_method: KL}\n"),
                               "onnxruntime")
    assert cfg.engine == "onnxruntime" and cfg.engine.ort and not cfg.engine.paddleslim
    assert ort_method("KL") == "Entropy" and ort_method("hist") == "Percentile"
    assert ort_op_types(["conv2d", "depthwise_conv2d"]) == ["Conv"]
    s = quant_settings(cfg)
    assert s["per_channel"] and s["activation_type"] == "QUInt8" and isinstance(s["reduce_range"], bool)
    assert load_compress_config(DEFAULT_PTQ_ORT_CONFIG).engine == "onnxruntime"


def test_qat_with_the_onnxruntime_engine_refuses_acts_keys(tmp_path):
    """Engine onnxruntime trains its INT8 graph with its own loss (compress/qdq_qat.py): ACT's distillation keys
    are an error before anything runs, not ignored."""
    from fastdet_cli.cli import main

    cfg = write(tmp_path, "Global: {model_dir: default, engine: onnxruntime}\nQuantAware: {}\n"
                          "Distillation: {loss: l2}\n")
    assert main(["compress", str(cfg), "--save-dir", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def _tiny_conv_model(path: Path) -> None:
    """x → Conv → Relu → Conv → y, float, built in code."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_sites_of_ort_qdq_graph_include_outputs_and_float_wiring_is_exact(tmp_path):
    import onnx
    from ort_run import quantize_qdq

    from fastdet_cli.compress import sensitivity as S

    _tiny_conv_model(tmp_path / "f.onnx")
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)} for i in range(4)]
    quantize_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", feeds,
                 extra_options={"AddQDQPairToWeight": True, "QDQKeepRemovableActivations": True})
    fp32, q = onnx.load(str(tmp_path / "f.onnx")), onnx.load(str(tmp_path / "q.onnx"))
    sites = {s.conv: s for s in S.conv_sites(q)}
    assert set(sites) == {"conv1", "conv2"}
    assert sites["conv1"].weight == "w1" and sites["conv1"].output == "c1" and sites["conv1"].output_dq
    probe = S.OutputProbe(fp32, feeds)
    assert probe.error(q) > 1e-6  # quantization changes the output …
    assert probe.error(S.with_float(q, list(sites.values()))) < 1e-10  # … and the float wiring undoes all of it


@pytest.mark.paddle
def test_default_ort_engine_output_runs_int8_on_ort_within_half_a_point(default_ptq_ort, val_dataset):
    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.inspection import inspect_model
    from fastdet_cli.paths import DEFAULT_MODEL_DIR

    out = Path(default_ptq_ort)
    assert sorted(p.name for p in out.iterdir()) == ["compress_report.json", "fastdet.yml", "infer_cfg.yml",
                                                     "model.onnx"]
    assert (out / "infer_cfg.yml").read_bytes() == (DEFAULT_MODEL_DIR / "infer_cfg.yml").read_bytes()
    report = json.loads((out / "compress_report.json").read_text())
    assert report["engine"] == "onnxruntime" and report["format"] == "onnx"
    assert report["config_resolved"]["per_channel"] and report["config_resolved"]["reduce_range_reason"]
    r = inspect_model(str(out), BACKENDS["ort"], runs=3)
    int8, fp = r.convs()
    assert r.quantized and int8 / (int8 + fp) >= 0.9, (int8, fp)  # the target: ≥ 90% of convs in INT8
    # hard-swish's gate runs in integer kernels but after a convolution kept in float (export/qdq.py)
    assert report["config_resolved"]["hard_sigmoid_integer"] >= 50, report["config_resolved"]
    assert sum(o.op_type == "HardSigmoid" for o in r.ops) <= fp, [o for o in r.ops if o.op_type == "HardSigmoid"]
    # ORT's optimized graph, as the report counts it: no HardSigmoid island left in an INT8 chain; the float ops
    # between quantized ones are those next to the convolutions the search kept float (their gate's Add, Mul)
    g = report["config_resolved"]["ort_optimized_graph"]
    assert g["ops"]["QLinearConv"] == int8 and g["ops"]["QLinearAdd"] >= 50, g["ops"]
    assert "HardSigmoid" not in g["float_between_int8_types"] and g["float_between_int8"] <= 2 * fp, g
    maps = {}
    for name, model in (("fp32", "default"), ("int8", str(out))):
        with detector(model, BACKENDS["ort"]) as det:
            maps[name] = coco_evaluate(det, val_dataset).map
    assert maps["fp32"] - maps["int8"] <= 0.005, maps


def test_post_conv_nodes_are_the_ops_after_the_last_convolutions(tmp_path):
    import onnx
    from onnx import helper

    from fastdet_cli.compress.ort_quantize import post_conv_nodes

    _tiny_conv_model(tmp_path / "f.onnx")
    m = onnx.load(str(tmp_path / "f.onnx"))
    m.graph.node.append(helper.make_node("Sigmoid", ["y"], ["scores"], name="score_sigmoid"))
    m.graph.output[0].name = "scores"
    onnx.save(m, str(tmp_path / "g.onnx"))
    assert post_conv_nodes(tmp_path / "g.onnx") == ["score_sigmoid"]  # relu1 feeds conv2: quantized
