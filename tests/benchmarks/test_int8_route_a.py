"""benchmarks/int8_route_a.py's graph rewrite (route (a) of ONNX Runtime INT8): quantizing the outputs of
convolutions whose inputs are Q/DQ-quantized makes ORT fuse them into QLinearConv, one rounding step away."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from ort_run import run  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_route_a.py"


def route_a():
    spec = importlib.util.spec_from_file_location("int8_route_a", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conv_input_only_model(path):
    """PaddleSlim's export form: x → Q/DQ (u8) → Conv(float weight → Q → DQ, float bias) → y, no output pair."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    # 7-bit weights, as fastdet exports them: full-range s8 × u8 pairs saturate on CPUs without VNNI
    scale = (np.abs(w).reshape(8, -1).max(axis=1) / 63).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(128, np.uint8), "zp"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "ws"),
             numpy_helper.from_array(np.zeros(8, np.int8), "wzp"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
             helper.make_node("QuantizeLinear", ["w", "ws", "wzp"], ["wq"], axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["out"])]
    graph = helper.make_graph(nodes, "route_a", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_conv_output_quantization_makes_ort_fuse_qlinearconv(tmp_path):
    script = route_a()
    src, dst = tmp_path / "a.onnx", tmp_path / "b.onnx"
    conv_input_only_model(src)
    xs = [np.random.default_rng(i).normal(0, 1, (1, 3, 16, 16)).astype(np.float32) for i in range(4)]
    before_ops = [n.op_type for n in (run(src, xs[0], optimized=tmp_path / "o1.onnx"), onnx.load(
        str(tmp_path / "o1.onnx")))[1].graph.node]
    assert "QLinearConv" not in before_ops  # conv inputs quantized only: ORT keeps the conv in float
    ranges = script.calibrate_conv_outputs(src, [{"x": x} for x in xs])
    ys = [run(src, x) for x in xs]  # the calibration sees the convolution's output before the Relu
    assert set(ranges) == {"y"} and ranges["y"][0] < 0 < ranges["y"][1]
    assert ranges["y"][1] >= max(float(y.max()) for y in ys)
    assert script.quantize_conv_outputs(src, dst, ranges) == 1
    a, b = run(src, xs[0]), run(dst, xs[0], optimized=tmp_path / "o2.onnx")
    assert "QLinearConv" in [n.op_type for n in onnx.load(str(tmp_path / "o2.onnx")).graph.node]
    lo, hi = ranges["y"]
    assert np.abs(a - b).max() <= 2 * (hi - lo) / 255 + 1e-5  # one more rounding step of the output range


def test_the_route_lives_here_and_runs_through_fastdets_runner():
    import ast

    from fastdet_cli.export import qdq

    assert not hasattr(qdq, "quantize_conv_outputs") and not hasattr(qdq, "calibrate_conv_outputs")
    imported = {a.name for n in ast.walk(ast.parse(SCRIPT.read_text())) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(ast.parse(SCRIPT.read_text())) if isinstance(n, ast.ImportFrom)}
    assert "onnxruntime" not in imported and "fastdet_cli.runtime.registry" in imported  # sessions: create_runner
