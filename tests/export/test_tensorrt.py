"""TensorRT made right without a GPU: the TensorRT-flavoured export and its parser-rule checker, static input
shapes, the TensorRT API differences handled, and (where a GPU and TensorRT exist) the real engine."""
import types

import numpy as np
import pytest

from fastdet_cli.errors import FastdetError, MissingDependency, UnsupportedMode
from fastdet_cli.export.trt_check import check_for_tensorrt, check_graph
from fastdet_cli.runtime.registry import BACKENDS


@pytest.mark.paddle
@pytest.mark.parametrize("kind", ["nms", "boxes_scores", "raw_heads"])
def test_tensorrt_export_of_every_kind_passes_the_checker(tiny_models, tmp_path, kind):
    from fastdet_cli.artifacts import static_input_shapes
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.export.onnx import export_onnx

    res = export_onnx(resolve_model(tiny_models[kind]), tmp_path / "o", target="tensorrt")
    assert check_for_tensorrt(res.onnx_path) == [] and res.target == "tensorrt"
    shapes = static_input_shapes(resolve_model(tmp_path / "o"))
    assert shapes["image"][:2] == (1, 3) and all(isinstance(d, int) and d > 0 for s in shapes.values() for d in s)


@pytest.mark.paddle
def test_tensorrt_int8_export_is_symmetric_int8_with_float_biases(default_ptq, default_ptq_ort, tmp_path):
    import onnx

    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.export.onnx import export_onnx
    from fastdet_cli.onnx_graph import constant_values

    res = export_onnx(resolve_model(default_ptq), tmp_path / "trt", int8=True, target="tensorrt")
    assert check_for_tensorrt(res.onnx_path) == []
    assert res.max_diff["quantized convolutions"] > 20  # the INT8 check (structure and outputs) passed on it
    graph = onnx.load(str(res.onnx_path)).graph
    consts = constant_values(graph)
    zps = [consts[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
           and len(n.input) > 2]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    # the ONNX Runtime flavours are what TensorRT would reject: the checker can fail, and says why
    from fastdet_cli.artifacts import onnx_for

    problems = check_for_tensorrt(onnx_for(resolve_model(default_ptq)).path)  # the ONNX Runtime flavour
    assert any("uint8" in p for p in problems) and any("int32" in p for p in problems)
    assert any("int32" in p for p in check_for_tensorrt(resolve_model(default_ptq_ort).path))


def test_checker_rules_on_small_graphs():
    from onnx import TensorProto, helper, numpy_helper

    def graph(zp_dtype, zp=0, axis_per_channel=False, extra_nodes=()):
        w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
        scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
        z = numpy_helper.from_array(np.array(zp, zp_dtype), "z")
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
                 helper.make_node("Conv", ["xd", "w"], ["y"], name="conv"), *extra_nodes]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, scale, z])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    assert check_graph(graph(np.int8)) == []
    assert any("uint8 quantization" in p for p in check_graph(graph(np.uint8, 128)))
    assert any("is not 0" in p for p in check_graph(graph(np.int8, 3)))
    contrib = helper.make_node("QLinearConv", ["a"], ["b"], name="qc")
    assert any("QLinearConv is not supported" in p for p in check_graph(graph(np.int8, extra_nodes=[contrib])))
    topk = helper.make_node("TopK", ["y", "k_dynamic"], ["v", "i"], name="topk")
    assert any("K must be a constant" in p for p in check_graph(graph(np.int8, extra_nodes=[topk])))
    old = graph(np.int8)
    old.opset_import[0].version = 7
    assert any("opset 7" in p for p in check_graph(old))


def _fake_trt(version: str, with_flags: bool):
    flags = types.SimpleNamespace(INT8="INT8", FP16="FP16") if with_flags else types.SimpleNamespace()
    return types.SimpleNamespace(__version__=version, BuilderFlag=flags,
                                 NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1))


def test_precision_setup_follows_the_tensorrt_api():
    """TensorRT 10 (builder flags) vs 11 (strongly typed networks only): the API shapes fastdet adapts to."""
    from fastdet_cli.runtime.tensorrt import precision_setup

    assert precision_setup(_fake_trt("10.13.0", True), "int8", True) == (0, ["FP16", "INT8"])
    assert precision_setup(_fake_trt("10.13.0", True), "fp32", False) == (0, [])
    assert precision_setup(_fake_trt("11.0.0", False), "int8", False) == (1 << 1, [])
    with pytest.raises(UnsupportedMode, match="strongly typed"):
        precision_setup(_fake_trt("11.0.0", False), "int8", True)


def test_cuda_runtime_missing_names_the_extra():
    import importlib.util

    from fastdet_cli.runtime.tensorrt import _check, cuda_runtime

    if importlib.util.find_spec("cuda"):
        pytest.skip("cuda-python installed")
    with pytest.raises(MissingDependency, match=r"pip install -e '\.\[trt-cu1[23]\]'"):
        cuda_runtime()
    with pytest.raises(FastdetError, match="CUDA runtime error 2"):
        _check((2, None))
    assert _check((0, 5)) == 5


def test_engine_cache_key_changes_with_tensorrt_and_gpu(tmp_path):
    from fastdet_cli.runtime.tensorrt import engine_cache_path

    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"model")
    a = engine_cache_path(onnx_file, "int8", {"image": (1, 3, 8, 8)}, tmp_path, "trt10.13|Tesla T4")
    assert a != engine_cache_path(onnx_file, "int8", {"image": (1, 3, 8, 8)}, tmp_path, "trt10.14|Tesla T4")
    assert a != engine_cache_path(onnx_file, "int8", {"image": (1, 3, 8, 8)}, tmp_path, "trt10.13|A100")


@pytest.mark.paddle
def test_bench_survives_a_failing_row(monkeypatch):
    from fastdet_cli import api
    from fastdet_cli.bench.run import BenchSettings
    from fastdet_cli.runtime.onnxruntime import OrtRunner

    def broken(self):
        raise RuntimeError("simulated runtime failure\nsecond line")

    monkeypatch.setattr(OrtRunner, "_activate", broken)
    report = api.bench(BenchSettings(backends=("ort", "paddle"), int8=False, repeat=2, warmup=1, eval=False),
                       log=lambda m: None).as_dict()
    rows = {r["backend"]: r for r in report["rows"] if r["precision"] == "fp32"}
    assert (rows["ort"]["status"], rows["ort"]["why"]) == ("failed", "RuntimeError: simulated runtime failure")
    assert rows["paddle"]["status"] == "ok"


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.paddle
def test_real_engine_matches_onnx_runtime(default_ptq, sample_image):
    """Runs where TensorRT and an NVIDIA GPU exist (never here): FP32 and INT8 engines on the embedded model."""
    from fastdet_cli.artifacts import detector
    from fastdet_cli.det.match import match_detections
    from fastdet_cli.runtime.base import RunnerOptions

    with detector("default", BACKENDS["ort"]) as ref, detector("default", BACKENDS["trt"]) as fp32, \
            detector(default_ptq, BACKENDS["trt"], RunnerOptions(device="gpu", precision="int8")) as int8:
        want = ref(sample_image)
        assert match_detections(fp32(sample_image), want)["matched"] >= 0.95
        assert match_detections(int8(sample_image), want)["matched"] >= 0.8
        assert fp32.runner.engine_path.exists()


@pytest.mark.paddle
def test_ort_engine_for_tensorrt_writes_what_tensorrt_parses(tmp_path, sample_image):
    import yaml

    from fastdet_cli.artifacts import Int8Artifact, choose, describe, detector
    from fastdet_cli.compress import compress

    cfg = tmp_path / "trt.yaml"
    cfg.write_text(yaml.safe_dump({"Global": {"model_dir": "default", "engine": "onnxruntime",
                                              "deploy_backend": "tensorrt", "ptq_image_path": "default"},
                                   "PTQ": {"calibration_method": "minmax", "batch_size": 2, "batch_nums": 2}}))
    out = compress(cfg, "ptq", tmp_path / "out", log=lambda m: None).output_dir
    assert check_for_tensorrt(out / "model.onnx") == []
    art = describe(out)
    assert art.kind == "ort-qdq" and art.target == "tensorrt"
    assert choose(BACKENDS["trt"], [art]) is art  # the TensorRT backend takes it; an ORT-flavoured one it would not
    with pytest.raises(UnsupportedMode, match="trt runs a"):
        choose(BACKENDS["trt"], [Int8Artifact(out, "ort-qdq", "PTQ (ORT)", "onnxruntime")])
    with detector(out, BACKENDS["ort"]) as det:  # and it still runs on ONNX Runtime
        assert len(det(sample_image)) > 0


def test_shape_range_option_parses_and_refuses_bad_ranges():
    from fastdet_cli.export.trt import parse_shape_range

    assert parse_shape_range("image:1x3x320x320:1x3x960x960") == {"image": ((1, 3, 320, 320), (1, 3, 960, 960))}
    for bad in ("image:1x3x320", "image:1x3x640x640:1x3x320x320", "image:1x3:1x3x2x2"):
        with pytest.raises(FastdetError, match="--shape-range"):
            parse_shape_range(bad)
