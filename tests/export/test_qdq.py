"""The int8 → uint8 activation rewrite: same function, and ONNX Runtime then fuses QLinearConv."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastdet_cli.export.qdq import activations_to_uint8  # noqa: E402
from ort_run import run  # noqa: E402


def qdq_conv_model(path, weight_bits=8):
    """x → Q/DQ (int8, zp 0) → Conv(W from DQ of int8 per-channel weights) → Q/DQ → y: paddle2onnx's pattern,
    weights over the full range of `weight_bits` (±127 at 8 bits, ±63 at 7)."""
    rng = np.random.default_rng(0)
    top = 2 ** (weight_bits - 1) - 1
    w = rng.integers(-top, top + 1, (8, 3, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.uniform(1e-3, 3e-3, 8).astype(np.float32), "ws"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wzp"), numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "ys", "zp"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "zp"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_rewrite_is_the_same_function_and_fuses(tmp_path):
    """The uint8 graph computes what the int8 one does, to one output step, with the weight width fastdet exports
    for this CPU: ORT's fused QLinearConv multiplies u8 activations by s8 weights, and without VNNI (AVX2's
    vpmaddubsw) it adds pairs of products in int16, which full-range 8-bit weights saturate (2 × 255 × 127 >
    32767), so the outputs may then differ by many steps; 7-bit weights (2 × 255 × 63 < 32767) cannot saturate,
    and are what int8_weight_bits prescribes there (VNNI and AMX sum in int32: full 8 bits)."""
    from fastdet_cli.machine import int8_weight_bits

    bits, _ = int8_weight_bits()
    src, dst = tmp_path / "s8.onnx", tmp_path / "u8.onnx"
    qdq_conv_model(src, bits)
    assert activations_to_uint8(src, dst) == 2
    model = onnx.load(str(dst))
    zps = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_zps = [zps[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(z.dtype == np.uint8 and int(z) == 128 for z in q_zps)
    assert zps["w"].dtype == np.int8  # weights untouched
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    a, b = run(src, x), run(dst, x, optimized=tmp_path / "opt.onnx")
    # the same quantized function; ORT's fused integer path may round a value to the neighbouring step
    assert np.abs(a - b).max() <= 0.05 + 1e-6 and np.mean(a == b) > 0.95
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QLinearConv" in ops


def float_weight_qdq_model(path, w):
    """Conv whose float weight goes through QuantizeLinear → DequantizeLinear sharing one per-channel scale
    (how paddle2onnx writes PaddleSlim's weights)."""
    scale = (np.abs(w).reshape(len(w), -1).max(axis=1) / 127).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "ws"),
             numpy_helper.from_array(np.zeros(len(w), np.int8), "wzp")]
    nodes = [helper.make_node("QuantizeLinear", ["w", "ws", "wzp"], ["wq"], axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
             helper.make_node("Conv", ["x", "wd"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "wqdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_reduce_weight_range_quantizes_weights_to_7_bits(tmp_path):
    from fastdet_cli.export.qdq import reduce_weight_range

    w = np.random.default_rng(1).normal(size=(4, 3, 3, 3)).astype(np.float32)
    float_weight_qdq_model(tmp_path / "a.onnx", w)
    assert reduce_weight_range(tmp_path / "a.onnx", tmp_path / "b.onnx") == 1
    m = onnx.load(str(tmp_path / "b.onnx"))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear")
    assert q.input[1] == dq.input[1] != "ws"
    m.graph.output.append(helper.make_tensor_value_info("wq", TensorProto.INT8, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    y7, wq = sess.run(["y", "wq"], {"x": x})
    assert np.abs(wq).max() == 63  # the largest weight of each channel maps to ±63, not ±127
    y8 = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    # still the same convolution, at half the weight resolution
    assert np.abs(y7 - y8).max() < 0.05 * np.abs(y8).max()
