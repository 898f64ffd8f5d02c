"""The ONNX ops compress/qdq_graph.py runs on Paddle's dygraph: `OPS` maps an op type to f(inputs, attributes) ->
[outputs]. Inputs are Paddle tensors, or numpy arrays for constants and shape values (a detector's post-processing
computes anchor grids from Shape/Range/Cast: that arithmetic stays numpy, and `as_tensor` turns a value into a
tensor where an op needs one). Attribute `_outputs` is the node's number of outputs (Split without sizes)."""
from __future__ import annotations

import numpy as np

from fastdet_cli.errors import FastdetError


def as_tensor(v):
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
        return [f(x[0], x[1]) if _numpy(x[0], x[1]) else f(as_tensor(x[0]), as_tensor(x[1]))]

    return op


def _unary(name: str):
    def op(x, a):
        import paddle
        import paddle.nn.functional as F

        return [(getattr(F, name, None) or getattr(paddle, name))(as_tensor(x[0]))]

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
    return F.conv2d(as_tensor(x), as_tensor(w), None if b is None else as_tensor(b),
                    stride=list(a.get("strides", [1, 1])), padding=padding,
                    dilation=list(a.get("dilations", [1, 1])), groups=int(a.get("group", 1)))


def _clip(args, a):
    import paddle

    lo = args[1] if len(args) > 1 and args[1] is not None else a.get("min")
    hi = args[2] if len(args) > 2 and args[2] is not None else a.get("max")
    return [paddle.clip(as_tensor(args[0]), None if lo is None else float(lo), None if hi is None else float(hi))]


def _resize(args, a):
    import paddle.nn.functional as F

    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = a.get("coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    scales = args[2] if len(args) > 2 else None
    sizes = args[3] if len(args) > 3 else None
    x = as_tensor(args[0])
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

    x, axis = as_tensor(args[0]), int(a.get("axis", 0))
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

    return [np.concatenate(args, axis=a["axis"]) if _numpy(*args) else paddle.concat([as_tensor(v) for v in args],
                                                                                    axis=a["axis"])]


def _transpose(args, a):
    import paddle

    x, perm = args[0], list(a["perm"])
    return [np.transpose(x, perm) if _numpy(x) else paddle.transpose(x, perm)]


def _batch_norm(x, a):
    import paddle.nn.functional as F

    x, scale, bias, mean, var = (as_tensor(v) for v in x[:5])
    return [F.batch_norm(x, mean, var, scale, bias, training=False, epsilon=a.get("epsilon", 1e-5))]


def _pool(x, a):
    import paddle
    import paddle.nn.functional as F

    if a is None:  # GlobalAveragePool
        return [paddle.mean(as_tensor(x[0]), axis=[2, 3], keepdim=True)]
    pads = list(a.get("pads", [0] * 4))
    return [F.max_pool2d(as_tensor(x[0]), list(a["kernel_shape"]), list(a.get("strides", [1, 1])),
                         [v for p in zip(pads[:2], pads[2:]) for v in p])]


def _leaky_relu(x, a):
    import paddle.nn.functional as F

    return [F.leaky_relu(as_tensor(x[0]), a.get("alpha", 0.01))]


def _hard_sigmoid(x, a):
    import paddle

    return [paddle.clip(as_tensor(x[0]) * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0)]


OPS = {
    "Conv": lambda x, a: [_conv(x, a)],
    "Identity": lambda x, a: [x[0]],
    "Add": _binary(lambda p, q: p + q), "Sub": _binary(lambda p, q: p - q), "Mul": _binary(lambda p, q: p * q),
    "Div": _binary(_div),
    "MatMul": lambda x, a: [__import__("paddle").matmul(as_tensor(x[0]), as_tensor(x[1]))],
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"), "Exp": _unary("exp"),
    "Sqrt": _unary("sqrt"), "HardSwish": _unary("hardswish"), "LeakyRelu": _leaky_relu,
    "Softmax": lambda x, a: [__import__("paddle").nn.functional.softmax(as_tensor(x[0]), axis=a.get("axis", -1))],
    "HardSigmoid": _hard_sigmoid, "Clip": _clip, "Concat": _concat, "Split": _split, "Reshape": _reshape,
    "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Expand": _expand, "Cast": _cast,
    "Shape": lambda x, a: [np.array(x[0].shape, np.int64)],
    "Range": lambda x, a: [np.arange(x[0], x[1], x[2]).astype(np.asarray(x[0]).dtype)],
    "Flatten": lambda x, a: [_reshape([x[0], np.array([int(np.prod(x[0].shape[:a.get("axis", 1)])), -1])], {})[0]],
    "GlobalAveragePool": lambda x, a: _pool(x, None), "MaxPool": _pool, "Resize": _resize,
    "BatchNormalization": _batch_norm,
}
