"""Reading a Paddle inference program (`model.pdmodel`, old ProgramDesc format) without running it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

_ATTR_FIELDS = {0: "i", 1: "f", 2: "s", 6: "b", 9: "l", 12: "float64"}
NMS_OPS = ("multiclass_nms3", "multiclass_nms2", "multiclass_nms")
NMS_KEYS = ("background_label", "score_threshold", "nms_top_k", "nms_threshold", "nms_eta", "keep_top_k", "normalized")
QUANT_OPS = ("quantize_linear", "dequantize_linear", "fake_quantize_dequantize_abs_max",
             "fake_channel_wise_quantize_dequantize_abs_max", "fake_quantize_dequantize_moving_average_abs_max")


def load_program(pdmodel: Path):
    from fastdet_cli.lazy import import_paddle

    import_paddle()
    from paddle.base.proto import framework_pb2

    prog = framework_pb2.ProgramDesc()
    prog.ParseFromString(Path(pdmodel).read_bytes())
    return prog


def _attrs(op, keys) -> dict:
    out = {}
    for a in op.attrs:
        field = _ATTR_FIELDS.get(a.type)
        if field and a.name in keys:
            out[a.name] = getattr(a, field)
    return out


def op_counts(prog) -> dict[str, int]:
    return dict(Counter(op.type for block in prog.blocks for op in block.ops))


def nms_attributes(prog) -> dict | None:
    """The first multiclass NMS op's parameters, or None when the program has no NMS."""
    for block in prog.blocks:
        for op in block.ops:
            if op.type in NMS_OPS:
                return _attrs(op, NMS_KEYS)
    return None


def feed_names(prog) -> list[str]:
    """Input names in feed order (the `col` attribute of the feed ops)."""
    feeds = []
    for op in prog.blocks[0].ops:
        if op.type == "feed":
            col = _attrs(op, ("col",)).get("col", len(feeds))
            feeds.append((col, op.outputs[0].arguments[0]))
    return [name for _, name in sorted(feeds)]


def conv_weights(prog) -> dict[str, list[int]]:
    """Filter name → its dims, for every convolution of the program (in program order)."""
    dims = {v.name: list(v.type.lod_tensor.tensor.dims) for b in prog.blocks for v in b.vars}
    out = {}
    for block in prog.blocks:
        for op in block.ops:
            if op.type in ("conv2d", "depthwise_conv2d"):
                for inp in op.inputs:
                    if inp.parameter == "Filter":
                        out[inp.arguments[0]] = dims.get(inp.arguments[0], [0])
    return out  # a weight shared by several convs is named once


def single_output_conv_weights(prog) -> list[str]:
    """Weights of convolutions with one output channel. paddle2onnx 1.3.1 aborts on these when quantized
    (it folds BatchNorm into the scale and takes the max, not the abs-max: a negative scale), so compression
    keeps them in float."""
    return [w for w, dims in conv_weights(prog).items() if dims[0] == 1]


def mark_skip_quant(pdmodel: Path, out: Path, weights: list[str]) -> int:
    """Write a copy of the program in which the convolutions reading `weights` carry `skip_quant=True`, the
    attribute PaddleSlim's quantization passes honour (QAT has no skip list of its own). Returns how many
    ops were marked."""
    prog = load_program(pdmodel)
    wanted, marked = set(weights), 0
    for block in prog.blocks:
        for op in block.ops:
            if op.type in ("conv2d", "depthwise_conv2d") and any(
                    inp.parameter == "Filter" and inp.arguments[0] in wanted for inp in op.inputs):
                for a in op.attrs:
                    if a.name == "skip_quant":
                        a.b = True
                        break
                else:
                    attr = op.attrs.add()
                    attr.name, attr.type, attr.b = "skip_quant", 6, True  # 6 = BOOLEAN
                marked += 1
    Path(out).write_bytes(prog.SerializeToString())
    return marked
