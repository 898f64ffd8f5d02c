"""Hard-swish's gate kept integer on ONNX Runtime: DQ → HardSigmoid → Q (a float island) rewritten as
DQ + DQ(3) → Clip → Q read at scale 1/255, which ORT fuses into QLinearAdd — the same function within rounding."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastdet_cli.export.qdq import integer_hard_sigmoid, prune_dead_nodes  # noqa: E402

OUT_SCALE = 0.03


def hard_swish_model():
    """x → Q/DQ (uint8) → hard-swish as ORT's quantizer writes it (HardSigmoid → Q/DQ, then Mul → Q/DQ)."""
    def c(value, name, dtype):
        return numpy_helper.from_array(np.array(value, dtype), name)

    inits = [c(0.05, "xs", np.float32), c(128, "xzp", np.uint8), c(1 / 255, "hs", np.float32),
             c(0, "hzp", np.uint8), c(OUT_SCALE, "ys", np.float32), c(10, "yzp", np.uint8)]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["a"]),
        helper.make_node("HardSigmoid", ["a"], ["h"], alpha=1 / 6, beta=0.5, name="gate"),
        helper.make_node("QuantizeLinear", ["h", "hs", "hzp"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "hs", "hzp"], ["hd"]),
        helper.make_node("Mul", ["a", "hd"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "ys", "yzp"], ["mq"]),
        helper.make_node("DequantizeLinear", ["mq", "ys", "yzp"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _session(model, optimized=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_rewrite_is_the_same_function_and_runs_in_integer_kernels(tmp_path):
    x = np.random.default_rng(0).uniform(-6, 6, (1, 8, 16, 16)).astype(np.float32)
    model = hard_swish_model()
    before = _session(model).run(None, {"x": x})[0]
    assert integer_hard_sigmoid(model) == 1
    prune_dead_nodes(model)
    onnx.checker.check_model(model)
    after = _session(model, tmp_path / "opt.onnx").run(None, {"x": x})[0]
    # the gate's integers are the same but for QLinearAdd's fixed-point rounding (one level of 1/255 at most):
    # |x| ≤ 6.4 times 1/255 is under one output step
    assert np.abs(after - before).max() <= 1.001 * OUT_SCALE, np.abs(after - before).max()
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QLinearAdd" in ops and "QLinearMul" in ops, ops
    assert not {"HardSigmoid", "Add", "Clip", "Mul"} & set(ops), ops  # no float op left between the Q/DQ ends


def test_a_gate_whose_input_is_float_is_left_alone():
    model = hard_swish_model()
    gate = next(n for n in model.graph.node if n.op_type == "HardSigmoid")
    gate.input[0] = "x"  # fed by a float tensor (a convolution kept in float): nothing for QLinearAdd to fuse
    assert integer_hard_sigmoid(model) == 0


def test_other_hard_sigmoids_are_left_alone():
    model = hard_swish_model()
    gate = next(n for n in model.graph.node if n.op_type == "HardSigmoid")
    gate.attribute[0].f = 0.2  # ONNX's default alpha: not hard-swish's gate
    assert integer_hard_sigmoid(model) == 0
