"""Hard-swish written as four ops (paddle2onnx at opset 13) fused into one node and split back, the function
unchanged; a look-alike that is not a hard-swish is left alone."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fastdet_cli.onnx_graph import fuse_hardswish, split_hardswish


TAILS = {"div": ("Div", ["m", "d6"]), "mul": ("Mul", ["sixth", "m"]), "div-swapped": ("Div", ["d6", "m"])}


def _graph(three: float = 3.0, six_max: float = 6.0, extra_reader: bool = False, tail: str = "div"):
    """conv → x · clip(x + three, 0, six_max) / 6 → conv, constants as Constant nodes (as paddle2onnx writes them);
    `tail`: the last piece (div by 6, mul by 1/6, or 6 divided by the product: not a hard-swish)."""
    def const(name, v):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [v]))

    nodes = [const("c3", three), const("c0", 0.0), const("c6", six_max), const("d6", 6.0), const("sixth", 1 / 6),
             helper.make_node("Add", ["x", "c3"], ["a"], name="add"),
             helper.make_node("Clip", ["a", "c0", "c6"], ["c"], name="clip"),
             helper.make_node("Mul", ["x", "c"], ["m"], name="mul"),
             helper.make_node(TAILS[tail][0], TAILS[tail][1], ["y"], name="last")]
    # with extra_reader the Clip's output is read elsewhere too: fusing would change that reader's input
    return _conv_model(nodes, ["c"] if extra_reader else [])


def _conv_model(activation: list, extra_outputs: list[str]):
    """img → conv → `activation` (reads x, writes y) → mean, opset 13."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["img", "w"], ["x"], pads=[1, 1, 1, 1], name="conv0"), *activation,
             helper.make_node("ReduceMean", ["y"], ["out"], keepdims=1, name="mean")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["out", *extra_outputs]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])],
                              outputs, [onnx.numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"img": x})


def _keeps_function(model):
    """A check that `model`, rewritten in place later, still computes what it computes now."""
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32) * 4
    want = _run(model, x)[0]
    return lambda: np.allclose(_run(model, x)[0], want, atol=1e-5)


@pytest.mark.parametrize("tail", ["div", "mul"])
def test_fuse_then_split_keep_the_function(tail):
    model = _graph(tail=tail)
    same = _keeps_function(model)
    assert fuse_hardswish(model) == 1
    types = [n.op_type for n in model.graph.node]
    assert types.count("HardSwish") == 1 and not {"Add", "Clip", "Div"} & set(types)
    assert model.opset_import[0].version == 14 and not [n for n in model.graph.node if n.op_type == "Constant"]
    assert same()
    assert split_hardswish(model) == 1
    assert "HardSwish" not in [n.op_type for n in model.graph.node]
    assert same()


@pytest.mark.parametrize("kwargs", [{"three": 2.0}, {"six_max": 5.0}, {"extra_reader": True},
                                    {"tail": "div-swapped"}])
def test_look_alikes_are_left_alone(kwargs):
    model = _graph(**kwargs)
    before = [n.op_type for n in model.graph.node]
    assert fuse_hardswish(model) == 0
    assert [n.op_type for n in model.graph.node] == before and model.opset_import[0].version == 13


def _hardsigmoid_graph(alpha: float = 1 / 6, beta: float = 0.5, extra_reader: bool = False):
    """conv → x · HardSigmoid(x) → mean: how paddle2onnx writes Paddle's hard_swish op."""
    return _conv_model([helper.make_node("HardSigmoid", ["x"], ["h"], alpha=alpha, beta=beta, name="hsig"),
                        helper.make_node("Mul", ["h", "x"], ["y"], name="mul")], ["h"] if extra_reader else [])


def test_hardsigmoid_times_x_becomes_the_pieces_openvino_fuses():
    from fastdet_cli.onnx_graph import hard_swish_pieces

    model = _hardsigmoid_graph()
    same = _keeps_function(model)
    assert hard_swish_pieces(model) == 1
    types = [n.op_type for n in model.graph.node]
    assert not {"HardSigmoid", "HardSwish"} & set(types) and {"Add", "Clip", "Mul", "Div"} <= set(types)
    assert same()
    # a HardSigmoid with other constants is a gate of its own, not a hard-swish
    other = _hardsigmoid_graph(alpha=0.2)
    assert hard_swish_pieces(other) == 0 and "HardSigmoid" in [n.op_type for n in other.graph.node]


@pytest.mark.parametrize("kwargs", [{"alpha": 0.2}, {"beta": 0.6}, {"extra_reader": True}])
def test_gate_look_alikes_are_left_alone(kwargs):
    from fastdet_cli.onnx_graph import hardsigmoid_mul_to_hardswish

    model = _hardsigmoid_graph(**kwargs)
    before = [n.op_type for n in model.graph.node]
    assert hardsigmoid_mul_to_hardswish(model) == 0 and fuse_hardswish(model) == 0
    assert [n.op_type for n in model.graph.node] == before


def test_hardsigmoid_times_x_becomes_one_hardswish():
    from fastdet_cli.onnx_graph import hardsigmoid_mul_to_hardswish

    model = _hardsigmoid_graph()
    same = _keeps_function(model)
    assert hardsigmoid_mul_to_hardswish(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv", "HardSwish", "ReduceMean"]
    assert model.opset_import[0].version == 14 and same()
