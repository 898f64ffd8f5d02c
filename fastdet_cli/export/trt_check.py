"""What TensorRT's ONNX parser would reject, found on a CPU.

The rules are onnx-tensorrt's documented operator table and TensorRT's explicit-quantization rules (TensorRT
10): quantize/dequantize pairs are int8 with zero point 0 (uint8 only as network input or output), scales are
constant and positive, per-channel scales only on constant weights (axis 0 for Conv, 1 for ConvTranspose);
DequantizeLinear of int32 (quantized biases, as ONNX Runtime writes them) is not supported; Conv /
ConvTranspose weights are initializers (or the dequantized initializers of explicit quantization); inputs that
TensorRT needs as build-time constants (NonMaxSuppression's limits, TopK's K, Slice/Squeeze/Unsqueeze axes) are
constants; Resize uses modes it implements; no operator outside the default ONNX domain and none of the
operators its table marks unsupported. `fastdet export --for tensorrt` runs it on every export.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastdet_cli.onnx_graph import constant_values

UNSUPPORTED = {"BitShift", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
               "Det", "Compress", "ConcatFromSequence", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
               "SequenceErase", "SequenceInsert", "SequenceLength", "SplitToSequence", "StringNormalizer",
               "TfIdfVectorizer", "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss", "Multinomial",
               "MaxRoiPool", "MaxUnpool", "Unique", "Hardmax", "MeanVarianceNormalization", "Shrink",
               "RandomNormal", "RandomNormalLike"}
# inputs TensorRT reads at build time: (op, input index, what)
CONSTANT_INPUTS = [("NonMaxSuppression", 2, "max_output_boxes_per_class"), ("NonMaxSuppression", 3, "iou_threshold"),
                   ("NonMaxSuppression", 4, "score_threshold"), ("TopK", 1, "K"), ("Slice", 3, "axes"),
                   ("Squeeze", 1, "axes"), ("Unsqueeze", 1, "axes"), ("CumSum", 1, "axis")]
RESIZE_MODES = {"nearest", "linear", "cubic"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
MIN_OPSET, MAX_OPSET = 9, 20  # TensorRT 10.0's documented range


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _name(n) -> str:
    return n.name or f"{n.op_type}({n.output[0]})"


class _Graph:
    """What the checks read of a graph: its constants, who writes and who reads each tensor, its inputs/outputs."""

    def __init__(self, graph):
        self.consts = constant_values(graph)
        self.producer = {o: n for n in graph.node for o in n.output}
        self.io_names = {i.name for i in graph.input} | {o.name for o in graph.output}
        self._nodes = list(graph.node)

    def consumers(self, tensor: str) -> list:
        return [c for c in self._nodes if tensor in c.input]

    def is_weight(self, tensor: str) -> bool:
        """A constant, or the dequantized/quantized form of one (explicit quantization)."""
        seen = set()
        while tensor not in self.consts:
            node = self.producer.get(tensor)
            if node is None or tensor in seen or node.op_type not in ("DequantizeLinear", "QuantizeLinear",
                                                                      "Identity", "Cast"):
                return False
            seen.add(tensor)
            tensor = node.input[0]
        return True


def _zero_point_problems(n, g: _Graph) -> list[str]:
    """A Q/DQ node's zero point: a constant, int8 (uint8 only at the network's edge), 0."""
    has_zp = len(n.input) > 2 and n.input[2]
    zp = g.consts.get(n.input[2]) if has_zp else None
    if has_zp and zp is None:
        return [f"{_name(n)}: the zero point is not a constant"]
    problems = []
    if zp is not None:
        if zp.dtype == np.uint8 and not (set(n.input[:1]) | set(n.output)) & g.io_names:
            problems.append(f"{_name(n)}: uint8 quantization (TensorRT takes int8 with zero point 0; uint8 "
                            "only as a network input or output)")
        elif zp.dtype not in (np.int8, np.uint8):
            problems.append(f"{_name(n)}: {zp.dtype} zero point (int8 only; a quantized bias is not supported)")
        if np.any(np.asarray(zp) != 0):
            problems.append(f"{_name(n)}: zero point {np.unique(zp)[:3].tolist()} is not 0 (symmetric only)")
    return problems


def _per_channel_problems(n, g: _Graph) -> list[str]:
    """Per-channel scales: on constant weights only, on the axis the weight's consumer wants."""
    axis = _attr(n, "axis", 1)
    consumers = g.consumers(n.output[0])
    if not g.is_weight(n.input[0]):
        return [f"{_name(n)}: per-channel scales on an activation (per-tensor only)"]
    if any(c.op_type == "DequantizeLinear" for c in consumers):
        return []  # the Q of a Q/DQ weight pair: its DQ is checked with its consumer
    problems = []
    for c in consumers:
        want = 1 if c.op_type == "ConvTranspose" else 0
        if c.op_type in ("Conv", "ConvTranspose") and axis != want:
            problems.append(f"{_name(n)}: per-channel axis {axis} for {c.op_type} weights (TensorRT wants {want})")
    return problems


def _qdq_problems(n, g: _Graph) -> list[str]:
    """A QuantizeLinear/DequantizeLinear node: constant positive scales, its zero point, per-channel rules."""
    problems = []
    scale = g.consts.get(n.input[1])
    if scale is None:
        problems.append(f"{_name(n)}: the scale is not a constant")
    elif np.any(np.asarray(scale) <= 0):
        problems.append(f"{_name(n)}: a scale is not positive")
    problems += _zero_point_problems(n, g)
    if n.op_type == "DequantizeLinear" and n.input[0] in g.consts and g.consts[n.input[0]].dtype == np.int32:
        problems.append(f"{_name(n)}: DequantizeLinear of int32 (a quantized bias) is not supported")
    if scale is not None and np.asarray(scale).size > 1:
        problems += _per_channel_problems(n, g)
    if n.op_type == "QuantizeLinear" and any(c.op_type != "DequantizeLinear" for c in g.consumers(n.output[0])):
        problems.append(f"{_name(n)}: QuantizeLinear must feed DequantizeLinear (explicit quantization)")
    return problems


def _node_problems(n, g: _Graph) -> list[str]:
    if n.domain not in ("", "ai.onnx"):
        return [f"{_name(n)}: operator {n.domain}.{n.op_type} is outside the ONNX domain"]
    problems = [f"{_name(n)}: {n.op_type} is not supported by onnx-tensorrt"] if n.op_type in UNSUPPORTED else []
    if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
        problems += _qdq_problems(n, g)
    if n.op_type in ("Conv", "ConvTranspose") and not g.is_weight(n.input[1]):
        problems.append(f"{_name(n)}: {n.op_type} weights are not an initializer")
    for op, idx, what in CONSTANT_INPUTS:
        if n.op_type == op and len(n.input) > idx and n.input[idx] and n.input[idx] not in g.consts:
            problems.append(f"{_name(n)}: {op}'s {what} must be a constant")
    if n.op_type == "Resize":
        mode = _attr(n, "mode", b"nearest")
        coord = _attr(n, "coordinate_transformation_mode", b"half_pixel")
        mode, coord = (v.decode() if isinstance(v, bytes) else v for v in (mode, coord))
        if mode not in RESIZE_MODES or coord not in RESIZE_COORDS:
            problems.append(f"{_name(n)}: Resize mode {mode}/{coord} is not one TensorRT implements")
    return problems


def check_graph(model) -> list[str]:
    """Problems TensorRT's ONNX parser would have with `model` (an onnx.ModelProto); [] when none."""
    import onnx

    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"opset {opset} is outside TensorRT 10's range {MIN_OPSET}..{MAX_OPSET}")
    g = _Graph(model.graph)
    for n in model.graph.node:
        problems += _node_problems(n, g)
    for t in list(model.graph.input) + list(model.graph.output):
        elem = t.type.tensor_type.elem_type
        if elem in (onnx.TensorProto.DOUBLE, onnx.TensorProto.STRING, onnx.TensorProto.COMPLEX64):
            problems.append(f"graph {t.name}: {onnx.TensorProto.DataType.Name(elem)} is not a TensorRT type")
    return problems


def check_for_tensorrt(path: Path) -> list[str]:
    import onnx

    return check_graph(onnx.load(str(path)))
