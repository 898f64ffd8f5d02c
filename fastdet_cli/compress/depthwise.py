"""Per-channel activation ranges for the inputs of depthwise convolutions, in OpenVINO's INT8 form.

A quantized activation has one range per tensor: a channel whose values span 0.001 shares its 256 levels with a
channel spanning 10 and is rounded to a few of them. In a depthwise convolution each output channel reads one input
channel only, so one scale per input channel costs nothing in integer arithmetic: the dequantization scale of input
channel c multiplies output channel c, and OpenVINO's low-precision transformations move a per-channel dequantization
through a group convolution whose groups hold one channel each (the producer's FakeQuantize, per-channel, is fused
into the previous convolution as its post-op). Measured on the real-weight PicoDet (LCNet backbone, hard-swish;
Zen 4, 2026-12-06): the input ranges of the 40 depthwise convolutions span 0.001–0.07 per channel against 0.05 for
the tensor; with a range per channel the all-INT8 OpenVINO form agreed with FP32 at 0.886 on the calibration pages
instead of 0.561, every convolution still INT8 (OpenVINO's runtime model: 102 u8 convolutions in both), at 34.1
instead of 32.0 ms (FP32 70.5 ms). The sensitivity search ranked the depthwise convolutions most damaging (the
first six of its 29 float layers).

ONNX Runtime's QLinearConv and TensorRT take one activation scale per tensor, so their forms keep per-tensor ranges
(a per-channel pair would leave the convolution in float there). A tensor read by other convolutions as well keeps
its per-tensor pair for them; the depthwise convolution gets its own pair. An input made by a Concat (directly or
through one activation) keeps its per-tensor range: OpenVINO's MoveFakeQuantize moves a FakeQuantize from after a
Concat to each of its inputs without splitting per-channel constants, and the model no longer compiles ("Argument
shapes are inconsistent", OpenVINO 2026.4, the embedded model's neck); such an input is smoothed at α 1
instead (compress/smooth.py), the same spread moved into the depthwise filters.
"""
from __future__ import annotations

import numpy as np

LEVELS = 255  # uint8, asymmetric: OpenVINO's form (activation_uint8)
FLOOR = 1 / 256  # a channel's scale at least this share of the widest channel's (an all-zero channel has range 0)


def depthwise_inputs(model) -> dict[str, str]:
    """{depthwise Conv node name: the float tensor in front of its input's QuantizeLinear → DequantizeLinear pair}
    for every depthwise convolution (group > 1, one input channel per group) whose input is quantized."""
    from fastdet_cli.compress.sensitivity import conv_sites
    from fastdet_cli.onnx_graph import constant_values

    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    producer = {o: n for n in graph.node for o in n.output}
    vals = constant_values(graph)
    out = {}
    for site in conv_sites(model):
        node = nodes[site.conv]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = _weight_shape(node.input[1], producer, vals)
        if site.activation and group > 1 and shape is not None and shape[1] == 1 \
                and not after_concat(site.activation, producer, vals):
            out[node.name] = site.activation
    return out


def after_concat(tensor: str, producer: dict, vals: dict) -> bool:
    """Whether `tensor` is a Concat's output, or that of an op with one non-constant input that reads one (the
    pattern OpenVINO's MoveFakeQuantize rewrites)."""
    node = producer.get(tensor)
    if node is not None and node.op_type != "Concat":
        data = [i for i in node.input if i and i not in vals]
        node = producer.get(data[0]) if len(data) == 1 else None
    return node is not None and node.op_type == "Concat"


def _weight_shape(name: str, producer: dict, vals: dict) -> tuple | None:
    """The shape of a convolution's weight, read through its DequantizeLinear (and the probe's QuantizeLinear)."""
    for _ in range(3):
        if name in vals:
            return tuple(np.asarray(vals[name]).shape)
        node = producer.get(name)
        if node is None or node.op_type not in ("DequantizeLinear", "QuantizeLinear"):
            return None
        name = node.input[0]
    return None


def channel_pair(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, uint8 zero point) per channel for ranges [lo, hi] (each widened to hold 0)."""
    lo, hi = np.minimum(np.asarray(lo, np.float64), 0), np.maximum(np.asarray(hi, np.float64), 0)
    scale = (hi - lo) / LEVELS
    scale = np.maximum(scale, scale.max() * FLOOR if scale.max() > 0 else 1.0)
    zero = np.clip(np.round(-lo / scale), 0, LEVELS).astype(np.uint8)
    return scale.astype(np.float32), zero


def per_channel_depthwise(model, ranges: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """Give each depthwise convolution of `model` (in place) its own QuantizeLinear → DequantizeLinear pair on
    axis 1 with the per-channel `ranges` ({float tensor: (lowest, highest) per channel}) of its input; the
    per-tensor pairs no longer read are removed. Returns how many convolutions were rewritten."""
    from onnx import helper, numpy_helper

    from fastdet_cli.export.qdq import prune_dead_nodes

    graph = model.graph
    targets = depthwise_inputs(model)
    done = 0
    for conv_name, tensor in targets.items():
        if tensor not in ranges:
            continue
        scale, zero = channel_pair(*ranges[tensor])
        base = f"{conv_name}_fastdet_channel"
        graph.initializer.extend([numpy_helper.from_array(scale, f"{base}_scale"),
                                  numpy_helper.from_array(zero, f"{base}_zero_point")])
        pair = [helper.make_node("QuantizeLinear", [tensor, f"{base}_scale", f"{base}_zero_point"], [f"{base}_q"],
                                 name=f"{base}_q", axis=1),
                helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero_point"],
                                 [f"{base}_dq"], name=f"{base}_dq", axis=1)]
        at = next(i for i, n in enumerate(graph.node) if n.name == conv_name)
        graph.node[at].input[0] = f"{base}_dq"
        for k, node in enumerate(pair):  # right before the convolution: the graph stays in topological order
            graph.node.insert(at + k, node)
        done += 1
    if done:
        prune_dead_nodes(model)
    return done
