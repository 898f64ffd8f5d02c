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


def check_graph(model) -> list[str]:
    """Problems TensorRT's ONNX parser would have with `model` (an onnx.ModelProto); [] when none."""
    import onnx

    graph = model.graph
    consts = constant_values(graph)
    producer = {o: n for n in graph.node for o in n.output}
    io_names = {i.name for i in graph.input} | {o.name for o in graph.output}
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"opset {opset} is outside TensorRT 10's range {MIN_OPSET}..{MAX_OPSET}")

    def name(n):
        return n.name or f"{n.op_type}({n.output[0]})"

    def is_weight(tensor: str) -> bool:
        """A constant, or the dequantized/quantized form of one (explicit quantization)."""
        seen = set()
        while tensor not in consts:
            node = producer.get(tensor)
            if node is None or tensor in seen or node.op_type not in ("DequantizeLinear", "QuantizeLinear",
                                                                      "Identity", "Cast"):
                return False
            seen.add(tensor)
            tensor = node.input[0]
        return True

    for n in graph.node:
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{name(n)}: operator {n.domain}.{n.op_type} is outside the ONNX domain")
            continue
        if n.op_type in UNSUPPORTED:
            problems.append(f"{name(n)}: {n.op_type} is not supported by onnx-tensorrt")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = consts.get(n.input[1])
            if scale is None:
                problems.append(f"{name(n)}: the scale is not a constant")
            elif np.any(np.asarray(scale) <= 0):
                problems.append(f"{name(n)}: a scale is not positive")
            zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if len(n.input) > 2 and n.input[2] and zp is None:
                problems.append(f"{name(n)}: the zero point is not a constant")
            if zp is not None:
                if zp.dtype == np.uint8 and not (set(n.input[:1]) | set(n.output)) & io_names:
                    problems.append(f"{name(n)}: uint8 quantization (TensorRT takes int8 with zero point 0; uint8 "
                                    "only as a network input or output)")
                elif zp.dtype not in (np.int8, np.uint8):
                    problems.append(f"{name(n)}: {zp.dtype} zero point (int8 only; a quantized bias is not "
                                    "supported)")
                if np.any(np.asarray(zp) != 0):
                    problems.append(f"{name(n)}: zero point {np.unique(zp)[:3].tolist()} is not 0 (symmetric only)")
            if n.op_type == "DequantizeLinear" and n.input[0] in consts and consts[n.input[0]].dtype == np.int32:
                problems.append(f"{name(n)}: DequantizeLinear of int32 (a quantized bias) is not supported")
            if scale is not None and np.asarray(scale).size > 1:
                axis = _attr(n, "axis", 1)
                consumers = [c for c in graph.node if n.output[0] in c.input]
                if not is_weight(n.input[0]):
                    problems.append(f"{name(n)}: per-channel scales on an activation (per-tensor only)")
                elif any(c.op_type == "DequantizeLinear" for c in consumers):
                    pass  # the Q of a Q/DQ weight pair: its DQ is checked with its consumer
                else:
                    for c in consumers:
                        want = 1 if c.op_type == "ConvTranspose" else 0
                        if c.op_type in ("Conv", "ConvTranspose") and axis != want:
                            problems.append(f"{name(n)}: per-channel axis {axis} for {c.op_type} weights "
                                            f"(TensorRT wants {want})")
        if n.op_type == "QuantizeLinear":
            consumers = [c for c in graph.node if n.output[0] in c.input]
            if any(c.op_type != "DequantizeLinear" for c in consumers):
                problems.append(f"{name(n)}: QuantizeLinear must feed DequantizeLinear (explicit quantization)")
        if n.op_type in ("Conv", "ConvTranspose") and not is_weight(n.input[1]):
            problems.append(f"{name(n)}: {n.op_type} weights are not an initializer")
        for op, idx, what in CONSTANT_INPUTS:
            if n.op_type == op and len(n.input) > idx and n.input[idx] and n.input[idx] not in consts:
                problems.append(f"{name(n)}: {op}'s {what} must be a constant")
        if n.op_type == "Resize":
            mode = _attr(n, "mode", b"nearest")
            coord = _attr(n, "coordinate_transformation_mode", b"half_pixel")
            mode, coord = (v.decode() if isinstance(v, bytes) else v for v in (mode, coord))
            if mode not in RESIZE_MODES or coord not in RESIZE_COORDS:
                problems.append(f"{name(n)}: Resize mode {mode}/{coord} is not one TensorRT implements")
    for t in list(graph.input) + list(graph.output):
        elem = t.type.tensor_type.elem_type
        if elem in (onnx.TensorProto.DOUBLE, onnx.TensorProto.STRING, onnx.TensorProto.COMPLEX64):
            problems.append(f"graph {t.name}: {onnx.TensorProto.DataType.Name(elem)} is not a TensorRT type")
    return problems


def check_for_tensorrt(path: Path) -> list[str]:
    import onnx

    return check_graph(onnx.load(str(path)))
