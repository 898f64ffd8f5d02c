"""QAT of the ONNX forms (compress/qdq_graph.py, compress/qdq_qat.py) on a tiny detector-shaped graph built here:
Paddle's dygraph runs the FP32 graph as ONNX Runtime does, runs the Q/DQ graph as ONNX Runtime does (up to rare
rounding ties), writes untrained values back unchanged, and a short training lowers the distillation loss of the
graph ONNX Runtime runs afterwards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastdet_cli.errors import FastdetError

pytestmark = pytest.mark.paddle


def _tiny_detector(path: Path) -> None:
    """x → Conv → hard-swish (Add, Clip, Mul, Div) → depthwise Conv → Relu → {Conv → Sigmoid: scores [1, 64, 2];
    Conv: box distributions [1, 64, 8] (4 sides × 2 bins)}, float."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, shape, scale=0.5):
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    consts = [init("w1", (8, 3, 3, 3)), init("b1", (8,), 0.1), init("wd", (8, 1, 3, 3)), init("bd", (8,), 0.1),
              init("ws", (2, 8, 1, 1)), init("bs", (2,), 0.1), init("wb", (8, 8, 1, 1)), init("bb", (8,), 0.1),
              numpy_helper.from_array(np.array(3, np.float32), "three"),
              numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six"),
              numpy_helper.from_array(np.array([1, 2, 64], np.int64), "s2"),
              numpy_helper.from_array(np.array([1, 8, 64], np.int64), "s8")]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
             n("Add", ["c1", "three"], ["a1"]), n("Clip", ["a1", "zero", "six"], ["k1"]),
             n("Mul", ["c1", "k1"], ["m1"]), n("Div", ["m1", "six"], ["h1"]),
             n("Conv", ["h1", "wd", "bd"], ["d1"], name="dw", pads=[1, 1, 1, 1], group=8),
             n("Relu", ["d1"], ["r1"]),
             n("Conv", ["r1", "ws", "bs"], ["cs"], name="conv_s"), n("Sigmoid", ["cs"], ["ss"]),
             n("Reshape", ["ss", "s2"], ["rs"]), n("Transpose", ["rs"], ["scores"], perm=[0, 2, 1]),
             n("Conv", ["r1", "wb", "bb"], ["cb"], name="conv_b"),
             n("Reshape", ["cb", "s8"], ["rb"]), n("Transpose", ["rb"], ["dist"], perm=[0, 2, 1])]
    graph = helper.make_graph(nodes, "tiny_det", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 64, 2]),
                               helper.make_tensor_value_info("dist", TensorProto.FLOAT, [1, 64, 8])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def _feeds(n: int, seed: int) -> list[dict]:
    return [{"x": np.random.default_rng([seed, i]).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)}
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(FP32 path, Q/DQ path): ORT's quantizer's form (u8 activations, per-channel int8 weights, int32 biases) with
    the depthwise input's range per channel (OpenVINO's form, compress/depthwise.py)."""
    import onnx
    from ort_run import quantize_qdq

    from fastdet_cli.compress.depthwise import per_channel_depthwise

    tmp = tmp_path_factory.mktemp("qdq_qat")
    _tiny_detector(tmp / "f.onnx")
    quantize_qdq(tmp / "f.onnx", tmp / "q.onnx", _feeds(8, 0), op_types_to_quantize=["Conv"])
    model = onnx.load(str(tmp / "q.onnx"))
    lo, hi = np.zeros(8, np.float32), np.linspace(0.5, 6, 8).astype(np.float32)  # h1's channels span differently
    assert per_channel_depthwise(model, {"h1": (lo, hi)}) == 1
    onnx.save(model, str(tmp / "q.onnx"))
    return tmp / "f.onnx", tmp / "q.onnx"


def _ort(path: Path, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph's own semantics
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feed)


def _paddle(path: Path, feed: dict) -> list[np.ndarray]:
    import onnx
    import paddle

    from fastdet_cli.compress.qdq_graph import QdqGraph

    graph = QdqGraph(onnx.load(str(path)))
    with paddle.no_grad():
        out = graph({k: paddle.to_tensor(v) for k, v in feed.items()})
    return [out[o].numpy() for o in graph.outputs]


def test_fp32_graph_runs_as_onnx_runtime_runs_it(tiny):
    feed = _feeds(1, 5)[0]
    for a, b in zip(_paddle(tiny[0], feed), _ort(tiny[0], feed)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_qdq_graph_runs_as_onnx_runtime_runs_it(tiny):
    """The same rounding (a rare tie may round the other way): the dygraph's distance to ORT's Q/DQ result is far
    below the quantization error itself."""
    for feed in _feeds(3, 6):
        fp32 = _ort(tiny[0], feed)
        for a, b, f in zip(_paddle(tiny[1], feed), _ort(tiny[1], feed), fp32):
            assert np.abs(b - f).mean() > 1e-4  # the Q/DQ graph is not the float one …
            assert np.abs(a - b).mean() < 0.05 * np.abs(b - f).mean()  # … and the dygraph runs the Q/DQ one


def test_write_back_of_untrained_graph_changes_nothing(tiny):
    import onnx
    from onnx import numpy_helper

    from fastdet_cli.compress.qdq_graph import QdqGraph

    model = onnx.load(str(tiny[1]))
    before = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    graph = QdqGraph(model)
    assert graph.write_back() == 8  # 4 convolutions: weight and bias each
    for i in model.graph.initializer:
        after = numpy_helper.to_array(i)
        assert after.dtype == before[i.name].dtype
        np.testing.assert_array_equal(after, before[i.name])


def test_unsupported_op_is_named(tmp_path):
    from onnx import TensorProto, helper

    from fastdet_cli.compress.qdq_graph import QdqGraph

    graph = helper.make_graph([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(FastdetError, match="Einsum"):
        QdqGraph(helper.make_model(graph))


def test_output_kinds_are_the_decoded_outputs(tiny):
    import onnx

    from fastdet_cli.compress.qdq_qat import output_kinds

    assert output_kinds(onnx.load(str(tiny[1]))) == {"scores": "scores", "dist": "distribution"}


class _Samples:
    """FeedSamples' shape for feeds made in code."""

    def __init__(self, feeds):
        self.feeds, self.feed_names = feeds, ["x"]

    def __len__(self):
        return len(self.feeds)

    def __getitem__(self, i):
        return {k: v[0] for k, v in self.feeds[i].items()}


@pytest.mark.parametrize("learn_scales,lr", [(False, 1.0), (True, 0.03)])
def test_short_training_lowers_the_loss_of_the_graph_onnx_runtime_runs(tiny, tmp_path, learn_scales, lr):
    """Trained on 8 images, judged on 4 others: the held-back distillation loss falls, the best epoch is written,
    and ONNX Runtime running the written INT8 graph is closer to FP32 than the PTQ graph was — with the activation
    scales held, and learned."""
    import shutil

    import onnx

    from fastdet_cli.compress.qdq_qat import _Loss, train_qdq

    fp32, start = tiny
    model = tmp_path / "q.onnx"
    shutil.copyfile(start, model)
    held = _feeds(4, 9)
    record = train_qdq(model, fp32, _Samples(_feeds(8, 0)), _Samples(held), None,
                       {"epochs": 6, "learning_rate": lr}, augment=False, log=lambda m: None,
                       learn_scales=learn_scales)
    assert record["learned_scales"] == (7 if learn_scales else 0)  # every Q/DQ pair: the input, the
    # convolutions' outputs, h1 (per channel)
    losses = [h["holdout_loss"] for h in record["history"]]
    assert record["chosen_epoch"] > 0 and losses[record["chosen_epoch"]] == min(losses) < losses[0]

    def ort_loss(path: Path) -> float:
        import paddle

        loss, names, values = _Loss(onnx.load(str(path))), ["scores", "dist"], []
        for f in held:
            student = {n: paddle.to_tensor(v) for n, v in zip(names, _ort(path, f))}
            values.append(float(loss(student, dict(zip(names, _ort(fp32, f))))))
        return float(np.mean(values))

    written = ort_loss(model)
    assert written < 0.9 * ort_loss(start)
    assert written == pytest.approx(losses[record["chosen_epoch"]], rel=0.02)  # the written graph is the trained one


def test_a_rise_in_held_back_loss_sends_training_back_to_the_lowest_loss_weights(tiny, tmp_path, monkeypatch):
    """A learning rate far too high makes epoch 1's held-back loss higher than the PTQ model's: training goes on from
    epoch 0's weights (the lowest loss) at BACKOFF × the rate. With BACKOFF 0 nothing moves after that, so epoch 2
    measures exactly as epoch 0 did (it would measure as epoch 1 if the weights were not set back)."""
    import shutil

    from fastdet_cli.compress import qdq_qat

    fp32, start = tiny
    model = tmp_path / "q.onnx"
    shutil.copyfile(start, model)
    monkeypatch.setattr(qdq_qat, "BACKOFF", 0.0)
    record = qdq_qat.train_qdq(model, fp32, _Samples(_feeds(8, 0)), _Samples(_feeds(4, 9)), None,
                               {"epochs": 3, "learning_rate": 300.0}, augment=False, patience=0,
                               log=lambda m: None)
    h = record["history"]
    assert h[1]["holdout_loss"] > h[0]["holdout_loss"]
    assert [e["lr_factor"] for e in h[1:]] == [1.0, 0.0, 0.0]
    assert h[2]["holdout_loss"] == h[3]["holdout_loss"] == h[0]["holdout_loss"] and record["chosen_epoch"] == 0


def test_with_nothing_held_back_the_last_epoch_is_written(tiny, tmp_path):
    """Too few images to hold any back: nothing measures the epochs, so the trained model is written (not the PTQ
    model every unmeasured epoch would tie with)."""
    import shutil

    from fastdet_cli.compress.qdq_qat import train_qdq

    fp32, start = tiny
    model = tmp_path / "q.onnx"
    shutil.copyfile(start, model)
    record = train_qdq(model, fp32, _Samples(_feeds(4, 0)), None, None, {"epochs": 2, "learning_rate": 1.0},
                       augment=False, log=lambda m: None)
    assert record["chosen_epoch"] == 2 and model.read_bytes() != start.read_bytes()


def test_training_keeps_7_bit_weights_7_bit(tiny, tmp_path):
    """Weights quantized to 7 bits (reduce_range: CPUs without VNNI) stay in that range however far training moves
    them (here: every weight ×100), in the forward pass and when written, so ORT's u8 × s8 pairs cannot saturate."""
    import onnx
    import paddle
    from onnx import numpy_helper
    from ort_run import quantize_qdq

    from fastdet_cli.compress.qdq_graph import QdqGraph

    path = tmp_path / "q7.onnx"
    quantize_qdq(tiny[0], path, _feeds(8, 0), op_types_to_quantize=["Conv"], reduce_range=True)
    model = onnx.load(str(path))

    def widest() -> int:
        return max(int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max())
                   for i in model.graph.initializer if numpy_helper.to_array(i).dtype == np.int8)

    before = widest()
    assert before <= 64
    graph = QdqGraph(model)
    for p, grid, _, unit in graph.params.values():
        if grid is not None and grid.zero.dtype == np.int8:  # a weight
            p.set_value(p.numpy() * 100)
            assert float(paddle.abs(grid.fake_quant(p * unit) / unit).max()) <= before + 1e-3
    graph.write_back()
    assert widest() == before


def _ort_optimized(path: Path, feed: dict) -> list[np.ndarray]:
    """ORT with its optimizations: Q/DQ → Conv → Q/DQ fused into QLinearConv (integer kernels, int32 bias read
    as input scale × weight scale)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_learned_scales_are_written_with_biases_on_their_new_grid(tiny, tmp_path):
    """Activation scales trained (LSQ): the written graph is the dygraph's, also where ONNX Runtime fuses
    QLinearConv, which reads an int32 bias as input scale × weight scale — so a bias follows its input's scale."""
    import onnx
    from onnx import numpy_helper
    from ort_run import quantize_qdq

    from fastdet_cli.compress.qdq_graph import QdqGraph

    path = tmp_path / "q.onnx"  # 7-bit weights: ORT's fused u8 × s8 kernels cannot saturate on any CPU (AVX2-only
    # ones pair products in int16), so a difference between its two runs is the bias's grid alone
    quantize_qdq(tiny[0], path, _feeds(8, 0), op_types_to_quantize=["Conv", "Relu", "Sigmoid"], reduce_range=True)
    model = onnx.load(str(path))
    before = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    graph = QdqGraph(model, learn_scales=True)
    assert len(graph.scales) >= 4 and graph.write_back() == 8  # untrained: nothing changes
    for i in model.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(i), before[i.name])
    rng = np.random.default_rng(1)
    for grid in graph.scales.values():  # scales moved by up to ±30%
        grid.theta.set_value(rng.uniform(-0.03, 0.03, grid.theta.shape).astype(np.float32))
    graph.write_back()
    onnx.save(model, str(path))
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert all(not np.allclose(after[n], before[n]) for n in graph.scales)  # every scale written
    producer = {o: n for n in model.graph.node for o in n.output}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        x, w, b = (producer[i] for i in conv.input)  # DequantizeLinear each
        # QLinearConv's contract: the int32 bias is on input scale × weight scale (per output channel) …
        np.testing.assert_allclose(after[b.input[1]], after[x.input[1]] * after[w.input[1]], rtol=1e-5)
        # … and it still holds the bias's value, to half its new step
        value, was = after[b.input[0]] * after[b.input[1]], before[b.input[0]] * before[b.input[1]]
        assert np.all(np.abs(value - was) <= 0.5 * after[b.input[1]] + 1e-7)
    for feed in _feeds(3, 6):
        fp32, plain, fused = _ort(tiny[0], feed), _ort(path, feed), _ort_optimized(path, feed)
        dygraph = _paddle(path, feed)
        for d, p, f, x in zip(dygraph, plain, fused, fp32):
            error = np.abs(p - x).mean()
            assert np.abs(f - p).mean() < 0.1 * error  # ORT's integer kernels run the written graph …
            assert np.abs(d - p).mean() < 0.1 * error  # … which is the dygraph's
