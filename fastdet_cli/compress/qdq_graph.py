"""An ONNX graph — FP32, or the INT8 Q/DQ form a deploy target runs — executed by Paddle's dygraph, so that it can be
trained: quantization-aware training of the very graph the backend runs (compress/qdq_qat.py).

Every QuantizeLinear → DequantizeLinear pair starts from its calibrated scale and zero point (per tensor, or per
channel as the depthwise inputs of OpenVINO's form have them) and rounds with a straight-through gradient, clipped
to its integer range (the gradient is 0 where the value is clipped); with `learn_scales` the activations' scales are
trained too (LSQ: the rounding's straight-through form gives the scale its gradient), the zero points held. A
convolution's int8 weight behind a DequantizeLinear becomes a float parameter, rounded to the same grid on every
forward pass (per output channel); its int32 bias a float parameter; a convolution left in float trains its float
weight and bias. `write_back` puts the trained values into the ONNX model in its own storage (int8 on the weight's
grid, int32 on the bias's, float scales), so the written graph is the trained one. Ops are the small set detectors
exported by paddle2onnx use; any other op is an error that names it.
"""
from __future__ import annotations

import numpy as np

from fastdet_cli.compress.onnx_ops import OPS, as_tensor
from fastdet_cli.errors import FastdetError


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _axis_shape(scale: np.ndarray, axis: int, ndim: int) -> list[int]:
    """The shape that broadcasts a per-channel `scale` along `axis` of an `ndim`-dimensional tensor."""
    shape = [1] * ndim
    shape[axis % ndim] = scale.size
    return shape


class _Grid:
    """A quantization grid: scale and zero point (broadcast along `axis` when per channel) and the integer range
    of the zero point's type (uint8 when it has none, as in ONNX)."""

    def __init__(self, scale: np.ndarray, zero: np.ndarray | None, axis: int):
        self.scale = np.asarray(scale, np.float32)
        self.zero = np.zeros(self.scale.shape, np.uint8) if zero is None else np.asarray(zero)
        info = np.iinfo(self.zero.dtype)
        self.qmin, self.qmax = float(info.min), float(info.max)
        self.axis = axis

    def _shape(self, ndim: int) -> list[int]:
        return _axis_shape(self.scale, self.axis, ndim) if self.scale.size > 1 else [1]

    def fake_quant(self, x, out: _Grid | None = None):
        """x rounded to the grid (straight-through gradient; zero where clipped), back in float on `out`'s grid
        (a DequantizeLinear may read a QuantizeLinear of another scale: a requantization), else its own."""
        import paddle

        out = out or self
        q = x / self.scale_tensor(x.ndim) + self._tensor(self.zero, x.ndim)
        q = paddle.clip(q + (paddle.round(q) - q).detach(), self.qmin, self.qmax)
        return (q - out._tensor(out.zero, x.ndim)) * out.scale_tensor(x.ndim)

    def scale_tensor(self, ndim: int):
        return self._tensor(self.scale, ndim)

    def _tensor(self, value: np.ndarray, ndim: int):
        import paddle

        return paddle.to_tensor(value.astype(np.float32).reshape(self._shape(ndim)))

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        shape = self._shape(q.ndim)
        return ((q.astype(np.float32) - self.zero.astype(np.float32).reshape(shape))
                * self.scale.reshape(shape)).astype(np.float32)

    def integers(self, value: np.ndarray) -> np.ndarray:
        shape = self._shape(value.ndim)
        q = np.round(value / self.scale.reshape(shape)) + self.zero.astype(np.float32).reshape(shape)
        return np.clip(q, self.qmin, self.qmax).astype(self.zero.dtype)


class _BiasGrid(_Grid):
    """An int32 bias's grid: fine enough (input scale × weight scale) to train in float; rounded when written."""

    def __init__(self, grid: _Grid):
        super().__init__(grid.scale, np.zeros(grid.scale.shape, np.int32), grid.axis)

    def fake_quant(self, x):
        return x


class _LearnedGrid(_Grid):
    """An activation's grid whose scale is trained (LSQ: the straight-through rounding gives the scale its
    gradient): scale = calibrated scale · exp(SCALE_STEP · θ), θ a parameter from 0 — in log space, so that one
    Adam step is the same share of every scale; SCALE_STEP makes a step of the weights' learning rate a larger one
    here. The zero point stays."""

    def __init__(self, grid: _Grid):
        import paddle

        super().__init__(grid.scale, grid.zero, grid.axis)
        self.theta = paddle.create_parameter(list(self.scale.shape) or [1], "float32",
                                             default_initializer=paddle.nn.initializer.Constant(0.0))

    def scale_tensor(self, ndim: int):
        import paddle

        return self._tensor(self.scale, ndim) * paddle.exp(SCALE_STEP * self.theta).reshape(self._shape(ndim))

    def learned(self) -> np.ndarray:
        return (self.scale * np.exp(SCALE_STEP * self.theta.numpy().reshape(self.scale.shape))).astype(np.float32)


SCALE_STEP = 10.0  # a learned scale's θ unit (log space): the weights' learning rate × 10


class QdqGraph:
    """`model` (an onnx.ModelProto) as a callable on Paddle tensors: `graph({input: tensor})` → {output: tensor}.
    `parameters`: the convolutions' weights and biases, trainable. `latent`: {Conv node name: its FP32 weight} —
    the weights to start from (rounded on the forward pass, they give the INT8 weights back); without it a weight
    starts on its grid point, where the first small steps flip roundings that were not close calls.
    `learn_scales`: the activations' scales are trained too (_LearnedGrid), where a QuantizeLinear's scale is its
    DequantizeLinears' and no other node's; `write_back` then also writes the scales, and the int32 biases of the
    convolutions that read them on their new grid (ONNX Runtime's QLinearConv takes a bias in input scale × weight
    scale)."""

    def __init__(self, model, latent: dict[str, np.ndarray] | None = None, learn_scales: bool = False):
        from onnx import numpy_helper

        self.model = model
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant":
                a = _attrs(n)
                self.consts[n.output[0]] = (numpy_helper.to_array(a["value"]) if "value" in a else
                                            np.asarray(next(iter(a.values()))))  # value_float(s) / value_int(s)
        self.nodes = [n for n in model.graph.node if n.op_type != "Constant"]
        unknown = sorted({n.op_type for n in self.nodes} - set(OPS) - {"QuantizeLinear", "DequantizeLinear"})
        if unknown:
            raise FastdetError(f"QAT of the ONNX form cannot run op(s) {', '.join(unknown)} (it runs "
                               f"{', '.join(sorted(OPS))} and Q/DQ)")
        self.outputs = [o.name for o in model.graph.output]
        # conv input → (parameter, its grid or None, the initializer it is stored in, the value of one unit)
        self.params: dict[str, tuple] = {}
        self._tensors: dict[str, object] = {}
        self.latent_used = 0
        self._bias_follows: dict[str, str] = {}  # a bias (int32 initializer's conv input) → the scale it follows
        self._make_parameters(latent or {})
        self.scales: dict[str, _LearnedGrid] = self._learned_scales() if learn_scales else {}

    def _make_parameters(self, latent: dict[str, np.ndarray]) -> None:
        """The convolutions' weights and biases (through a DequantizeLinear of an initializer, or float)."""
        import paddle

        dq = {n.output[0]: n for n in self.nodes if n.op_type == "DequantizeLinear" and n.input[0] in self.consts}
        for conv in (n for n in self.nodes if n.op_type == "Conv"):
            for pos, name in list(enumerate(conv.input))[1:]:
                if not name:
                    continue
                grid, source = None, name
                if name in dq:
                    d = dq[name]
                    source = d.input[0]
                    grid = _Grid(self.consts[d.input[1]], self.consts.get(d.input[2]) if len(d.input) > 2 else None,
                                 _attrs(d).get("axis", 1))
                    value = grid.dequantize(self.consts[source])
                    start = latent.get(conv.name) if pos == 1 else None
                    if start is not None and start.shape == value.shape and np.array_equal(
                            grid.integers(start), self.consts[source]):  # the FP32 weight these integers came from
                        value, self.latent_used = start.astype(np.float32), self.latent_used + 1
                    if pos == 1:  # training keeps the range the quantizer used: 7-bit weights (reduce_range,
                        # CPUs without VNNI: pmaddubsw's int16 pairs saturate otherwise) stay 7-bit
                        widest = float(np.abs(self.consts[source].astype(np.int32)).max())
                        grid.qmin, grid.qmax = max(grid.qmin, -widest), min(grid.qmax, widest)
                    grid = grid if pos == 1 else _BiasGrid(grid)
                elif name in self.consts:
                    value = self.consts[name].astype(np.float32)
                else:
                    continue
                unit = _unit(value, grid)
                p = paddle.create_parameter(list(value.shape), "float32",
                                            default_initializer=paddle.nn.initializer.Assign(value / unit))
                self.params[name] = (p, grid, source, paddle.to_tensor(unit))

    def _learned_scales(self) -> dict[str, _LearnedGrid]:
        """{scale initializer: its learned grid} for the activations' QuantizeLinears whose scale initializer only
        they and their DequantizeLinears read."""
        readers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                readers.setdefault(i, []).append(n)
        out = {}
        for q in (n for n in self.nodes if n.op_type == "QuantizeLinear" and n.input[0] not in self.consts):
            scale = q.input[1]
            dqs = readers.get(q.output[0], [])
            if (scale in self.consts and dqs and all(d.op_type == "DequantizeLinear" and d.input[1] == scale
                                                     for d in dqs)
                    and len(readers[scale]) == 1 + len(dqs)):
                zero = self.consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
                out[scale] = _LearnedGrid(_Grid(self.consts[scale], zero, _attrs(q).get("axis", 1)))
        # a convolution's bias is stored on input scale × weight scale: it follows a learned per-tensor input scale
        dq = {n.output[0]: n for n in self.nodes if n.op_type == "DequantizeLinear"}
        q_scale = {n.output[0]: n.input[1] for n in self.nodes if n.op_type == "QuantizeLinear"}
        for conv in (n for n in self.nodes if n.op_type == "Conv" and len(n.input) > 2 and n.input[2]):
            scale = q_scale.get(dq[conv.input[0]].input[0] if conv.input[0] in dq else "")
            if scale in out and conv.input[2] in self.params and self.params[conv.input[2]][1] is not None:
                if len(readers[dq[conv.input[2]].input[1]]) > 1:  # a shared bias scale cannot follow one input: held
                    out.pop(scale)
                else:
                    self._bias_follows[conv.input[2]] = scale
        self._bias_follows = {b: s for b, s in self._bias_follows.items() if s in out}
        return out

    @property
    def parameters(self) -> list:
        return [p for p, _, _, _ in self.params.values()] + [g.theta for g in self.scales.values()]

    def _value(self, name: str):
        """A node input: a computed tensor, a trainable parameter (rounded to its grid), or a constant."""

        if name in self._tensors:
            return self._tensors[name]
        if name in self.params:
            p, grid, _, unit = self.params[name]
            return p * unit if grid is None else grid.fake_quant(p * unit)
        if name in self.consts:
            return self.consts[name]  # numpy: shape arithmetic stays numpy, ops make tensors where they need them
        raise FastdetError(f"QAT of the ONNX form: value '{name}' has no producer")

    def __call__(self, feeds: dict) -> dict:
        self._tensors = dict(feeds)
        for n in self.nodes:
            if n.op_type == "DequantizeLinear" and n.output[0] in self.params:
                continue  # a weight or bias: its parameter stands for it
            if n.op_type == "QuantizeLinear":  # with its DequantizeLinear: one fake-quant (see _dequantize)
                self._tensors[n.output[0]] = ("q", n)
                continue
            if n.op_type == "DequantizeLinear":
                outs = [self._dequantize(n)]
            else:
                args = [self._value(i) if i else None for i in n.input]
                attrs = {**_attrs(n), "_outputs": len(n.output)}
                outs = OPS[n.op_type](args, attrs)
            self._tensors.update(zip(n.output, outs))
        out = {o: self._tensors[o] for o in self.outputs}
        self._tensors = {}
        return out

    def _dequantize(self, dq):
        import paddle

        zero = self.consts.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        if dq.input[0] in self.consts:  # a quantized constant (not a convolution's): fixed
            grid = _Grid(self.consts[dq.input[1]], zero, _attrs(dq).get("axis", 1))
            return paddle.to_tensor(grid.dequantize(self.consts[dq.input[0]]))
        src = self._tensors.get(dq.input[0])
        if not (isinstance(src, tuple) and src[0] == "q"):
            raise FastdetError(f"QAT of the ONNX form: DequantizeLinear '{dq.name}' reads no QuantizeLinear")
        q = src[1]
        qzero = self.consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
        if q.input[1] in self.scales:
            grid = out = self.scales[q.input[1]]
        else:
            grid = _Grid(self.consts[q.input[1]], qzero, _attrs(q).get("axis", 1))
            out = _Grid(self.consts[dq.input[1]], zero, _attrs(dq).get("axis", 1))
        return grid.fake_quant(as_tensor(self._value(q.input[0])), out)

    def write_back(self) -> int:
        """The trained parameters written into `self.model`'s initializers in their own storage; returns how many."""
        from onnx import numpy_helper

        inits = {i.name: i for i in self.model.graph.initializer}
        for name, grid in self.scales.items():
            inits[name].CopyFrom(numpy_helper.from_array(grid.learned().reshape(grid.scale.shape), name))
        bias_scale = {d.input[0]: d.input[1] for d in self.nodes if d.op_type == "DequantizeLinear"}
        for name, (p, grid, source, unit) in self.params.items():
            value = p.numpy() * unit.numpy()
            follows = self.scales.get(self._bias_follows.get(name, ""))
            if follows is not None and follows.scale.size == 1:  # the bias's grid moves with its input's scale
                grid = _BiasGrid(_Grid(grid.scale * float(follows.learned().ravel()[0] / follows.scale.ravel()[0]),
                                       None, grid.axis))
                inits[bias_scale[source]].CopyFrom(numpy_helper.from_array(
                    grid.scale.reshape(self.consts[bias_scale[source]].shape).astype(np.float32),
                    bias_scale[source]))
            stored = value.astype(np.float32) if grid is None else grid.integers(value)
            inits[source].CopyFrom(numpy_helper.from_array(stored, source))
        return len(self.params)


def _unit(value: np.ndarray, grid: _Grid | None) -> np.ndarray:
    """What one unit of a parameter is worth: its grid step (a weight's per output channel; a bias's int32 step,
    input scale × weight scale), for a float weight or bias 1/127 of its largest |value| per output channel. Adam
    moves every parameter by about the same number of units a step, so the learning rate is the same share of a
    grid step in every channel — in raw values a channel with a tiny scale (a nearly dead one) was moved by many of
    its steps at once."""
    if grid is not None:
        unit = grid.scale
    else:
        axes = tuple(range(1, value.ndim))
        unit = (np.abs(value).max(axis=axes) if axes else np.abs(value).max(keepdims=True)) / 127
    unit = np.maximum(np.asarray(unit, np.float32), 1e-12)
    shape = [1] * value.ndim
    if unit.size > 1:
        shape[0 if grid is None else grid.axis % value.ndim] = unit.size
    return np.broadcast_to(unit.reshape(shape), value.shape).astype(np.float32).copy()
