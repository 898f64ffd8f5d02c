"""An ONNX graph — FP32, or the INT8 Q/DQ form a deploy target runs — executed by Paddle's dygraph, so that it can be
trained: quantization-aware training of the very graph the backend runs (compress/qdq_qat.py).

Every QuantizeLinear → DequantizeLinear pair keeps its calibrated scale and zero point (per tensor, or per channel as
the depthwise inputs of OpenVINO's form have them) and rounds with a straight-through gradient, clipped to its
integer range (the gradient is 0 where the value is clipped). A convolution's int8 weight behind a DequantizeLinear
becomes a float parameter, rounded to the same grid on every forward pass (per output channel); its int32 bias a float
parameter; a convolution left in float trains its float weight and bias. `write_back` puts the trained values into
the ONNX model in its own storage (int8 on the weight's grid, int32 on the bias's), so the written graph is the
trained one. Ops are the small set detectors exported by paddle2onnx use; any other op is an error that names it.
"""
from __future__ import annotations

import numpy as np

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
        q = x / self._tensor(self.scale, x.ndim) + self._tensor(self.zero, x.ndim)
        q = paddle.clip(q + (paddle.round(q) - q).detach(), self.qmin, self.qmax)
        return (q - out._tensor(out.zero, x.ndim)) * out._tensor(out.scale, x.ndim)

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


class QdqGraph:
    """`model` (an onnx.ModelProto) as a callable on Paddle tensors: `graph({input: tensor})` → {output: tensor}.
    `parameters`: the convolutions' weights and biases, trainable. `latent`: {Conv node name: its FP32 weight} —
    the weights to start from (rounded on the forward pass, they give the INT8 weights back); without it a weight
    starts on its grid point, where the first small steps flip roundings that were not close calls."""

    def __init__(self, model, latent: dict[str, np.ndarray] | None = None):
        from onnx import numpy_helper

        self.model = model
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        self.nodes = [n for n in model.graph.node if n.op_type != "Constant"]
        unknown = sorted({n.op_type for n in self.nodes} - set(_OPS) - {"QuantizeLinear", "DequantizeLinear", "Conv"})
        if unknown:
            raise FastdetError(f"QAT of the ONNX form cannot run op(s) {', '.join(unknown)} (it runs "
                               f"{', '.join(sorted(_OPS))}, Conv and Q/DQ)")
        self.outputs = [o.name for o in model.graph.output]
        self.params: dict[str, tuple] = {}  # initializer → (parameter, grid or None)
        self._tensors: dict[str, object] = {}
        self.latent_used = 0
        self._make_parameters(latent or {})

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
                    grid = grid if pos == 1 else _BiasGrid(grid)
                elif name in self.consts:
                    value = self.consts[name].astype(np.float32)
                else:
                    continue
                unit = _unit(value, grid)
                p = paddle.create_parameter(list(value.shape), "float32",
                                            default_initializer=paddle.nn.initializer.Assign(value / unit))
                self.params[name] = (p, grid, source, paddle.to_tensor(unit))

    @property
    def parameters(self) -> list:
        return [p for p, _, _, _ in self.params.values()]

    def _value(self, name: str):
        """A node input: a computed tensor, a trainable parameter (rounded to its grid), or a constant."""

        if name in self._tensors:
            return self._tensors[name]
        if name in self.params:
            p, grid, _, unit = self.params[name]
            return p * unit if grid is None else grid.fake_quant(p * unit)
        if name in self.consts:
            return self.consts[name]  # numpy: shape arithmetic stays numpy, `_t` makes a tensor where one is needed
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
                outs = _OPS[n.op_type](args, attrs) if n.op_type != "Conv" else [_conv(args, attrs)]
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
        grid = _Grid(self.consts[q.input[1]], qzero, _attrs(q).get("axis", 1))
        out = _Grid(self.consts[dq.input[1]], zero, _attrs(dq).get("axis", 1))
        return grid.fake_quant(_t(self._value(q.input[0])), out)

    def write_back(self) -> int:
        """The trained parameters written into `self.model`'s initializers in their own storage; returns how many."""
        from onnx import numpy_helper

        inits = {i.name: i for i in self.model.graph.initializer}
        for p, grid, source, unit in self.params.values():
            value = p.numpy() * unit.numpy()
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


def _t(v):
    """A Paddle tensor: numpy values converted (floats as float32), tensors as they are."""
    import paddle

    if isinstance(v, (np.ndarray, np.generic, int, float)):
        v = np.asarray(v)
        return paddle.to_tensor(v.astype(np.float32) if v.dtype.kind == "f" else v)
    return v


def _numpy(*values) -> bool:
    return all(isinstance(v, np.ndarray) for v in values)


def _binary(f):
    """An elementwise op on two inputs: numpy when both are (shape arithmetic), else on tensors."""
    def op(x, a):
        return [f(x[0], x[1]) if _numpy(x[0], x[1]) else f(_t(x[0]), _t(x[1]))]

    return op


def _unary(name: str):
    def op(x, a):
        import paddle
        import paddle.nn.functional as F

        return [(getattr(F, name, None) or getattr(paddle, name))(_t(x[0]))]

    return op


def _div(p, q):
    if _numpy(p, q) and p.dtype.kind in "iu":
        return (p // q).astype(p.dtype)
    return p / q


def _conv(args, a: dict):
    import paddle.nn.functional as F

    x, w, b = (args + [None])[:3]
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise FastdetError("QAT of the ONNX form: Conv with auto_pad is not supported")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    half = len(pads) // 2
    padding = [v for pair in zip(pads[:half], pads[half:]) for v in pair]  # [top, bottom, left, right]
    return F.conv2d(_t(x), _t(w), None if b is None else _t(b), stride=list(a.get("strides", [1, 1])),
                    padding=padding, dilation=list(a.get("dilations", [1, 1])), groups=int(a.get("group", 1)))


def _clip(args, a):
    import paddle

    lo = args[1] if len(args) > 1 and args[1] is not None else a.get("min")
    hi = args[2] if len(args) > 2 and args[2] is not None else a.get("max")
    return [paddle.clip(_t(args[0]), None if lo is None else float(lo), None if hi is None else float(hi))]


def _resize(args, a):
    import paddle.nn.functional as F

    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = a.get("coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    scales = args[2] if len(args) > 2 else None
    sizes = args[3] if len(args) > 3 else None
    x = _t(args[0])
    if sizes is not None and np.size(sizes):
        size = [int(v) for v in np.asarray(sizes)[2:]]
    else:
        size = [int(round(d * float(s))) for d, s in zip(x.shape[2:], np.asarray(scales)[2:])]
    if mode == "nearest":
        return [F.interpolate(x, size=size, mode="nearest")]
    return [F.interpolate(x, size=size, mode="bilinear", align_corners=ctm == "align_corners",
                          align_mode=0 if ctm in ("half_pixel", "pytorch_half_pixel") else 1)]


def _split(args, a):
    import paddle

    x, axis = _t(args[0]), int(a.get("axis", 0))
    sizes = a.get("split") or (list(np.asarray(args[1]).astype(int)) if len(args) > 1 and args[1] is not None
                               else None)
    return paddle.split(x, sizes if sizes else int(a.get("num_outputs", a["_outputs"])), axis=axis)


def _reshape(args, a):
    import paddle

    x, shape = args[0], [int(v) for v in np.asarray(args[1])]
    shape = [x.shape[i] if v == 0 and not a.get("allowzero") else v for i, v in enumerate(shape)]
    return [x.reshape(shape) if _numpy(x) else paddle.reshape(x, shape)]


def _axes(args, a) -> list[int]:
    return [int(v) for v in (np.asarray(args[1]) if len(args) > 1 and args[1] is not None else a["axes"])]


def _squeeze(args, a):
    import paddle

    x = args[0]
    axes = _axes(args, a) if (len(args) > 1 and args[1] is not None) or "axes" in a else None
    if _numpy(x):
        return [np.squeeze(x, axis=None if axes is None else tuple(axes))]
    return [paddle.squeeze(x, axis=axes)]


def _unsqueeze(args, a):
    import paddle

    x, axes = args[0], _axes(args, a)
    return [np.expand_dims(x, tuple(axes)) if _numpy(x) else paddle.unsqueeze(x, axes)]


def _expand(args, a):
    import paddle

    x, shape = args[0], tuple(int(v) for v in np.asarray(args[1]))
    out = np.broadcast_shapes(tuple(x.shape), shape)
    return [np.broadcast_to(x, out).copy() if _numpy(x) else paddle.expand(x, list(out))]


def _cast(args, a):
    import paddle
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(a["to"]))
    x = args[0]
    return [x.astype(dtype) if _numpy(x) else paddle.cast(x, str(dtype))]


def _concat(args, a):
    import paddle

    return [np.concatenate(args, axis=a["axis"]) if _numpy(*args) else paddle.concat([_t(v) for v in args],
                                                                                    axis=a["axis"])]


def _transpose(args, a):
    import paddle

    x, perm = args[0], list(a["perm"])
    return [np.transpose(x, perm) if _numpy(x) else paddle.transpose(x, perm)]


def _batch_norm(x, a):
    import paddle.nn.functional as F

    return [F.batch_norm(_t(x[0]), _t(x[3]), _t(x[4]), _t(x[1]), _t(x[2]), training=False,
                         epsilon=a.get("epsilon", 1e-5))]


def _pool(x, a):
    import paddle
    import paddle.nn.functional as F

    if a is None:  # GlobalAveragePool
        return [paddle.mean(_t(x[0]), axis=[2, 3], keepdim=True)]
    pads = list(a.get("pads", [0] * 4))
    return [F.max_pool2d(_t(x[0]), list(a["kernel_shape"]), list(a.get("strides", [1, 1])),
                         [v for p in zip(pads[:2], pads[2:]) for v in p])]


def _leaky_relu(x, a):
    import paddle.nn.functional as F

    return [F.leaky_relu(_t(x[0]), a.get("alpha", 0.01))]


def _hard_sigmoid(x, a):
    import paddle

    return [paddle.clip(_t(x[0]) * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0)]


# op type → f(inputs, attributes) -> [outputs]; inputs are tensors, or numpy arrays for constants and shape values
_OPS = {
    "Identity": lambda x, a: [x[0]],
    "Add": _binary(lambda p, q: p + q), "Sub": _binary(lambda p, q: p - q), "Mul": _binary(lambda p, q: p * q),
    "Div": _binary(_div),
    "MatMul": lambda x, a: [__import__("paddle").matmul(_t(x[0]), _t(x[1]))],
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"), "Exp": _unary("exp"),
    "Sqrt": _unary("sqrt"), "HardSwish": _unary("hardswish"), "LeakyRelu": _leaky_relu,
    "Softmax": lambda x, a: [__import__("paddle").nn.functional.softmax(_t(x[0]), axis=a.get("axis", -1))],
    "HardSigmoid": _hard_sigmoid, "Clip": _clip, "Concat": _concat, "Split": _split, "Reshape": _reshape,
    "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Expand": _expand, "Cast": _cast,
    "Shape": lambda x, a: [np.array(x[0].shape, np.int64)],
    "Range": lambda x, a: [np.arange(x[0], x[1], x[2]).astype(np.asarray(x[0]).dtype)],
    "Flatten": lambda x, a: [_reshape([x[0], np.array([int(np.prod(x[0].shape[:a.get("axis", 1)])), -1])], {})[0]],
    "GlobalAveragePool": lambda x, a: _pool(x, None), "MaxPool": _pool, "Resize": _resize,
    "BatchNormalization": _batch_norm,
}
