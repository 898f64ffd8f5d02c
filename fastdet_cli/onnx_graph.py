"""Reading an ONNX graph without running it (its constants, the settings of its NMS node) and cutting it before
its NMS."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastdet_cli.hard_swish import find_all, match_gated, match_pieces


def constant_values(graph) -> dict[str, np.ndarray]:
    """Every constant tensor of `graph` by name: initializers and Constant nodes (paddle2onnx writes both)."""
    from onnx import numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            vals[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return vals


def conv_weights(model) -> dict[str, np.ndarray]:
    """{Conv node name: its weight (an initializer)} of a float graph."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    return {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "Conv" and n.input[1] in inits}


def nms_score_threshold(path: Path) -> float | None:
    """The score threshold of the graph's NonMaxSuppression node (0.0 when it takes none), or None without one."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for n in graph.node:
        if n.op_type == "NonMaxSuppression":
            v = constant_values(graph).get(n.input[4]) if len(n.input) > 4 and n.input[4] else None
            return float(np.asarray(v).reshape(-1)[0]) if v is not None else 0.0
    return None


def cut_nms(src: Path, dst: Path) -> dict | None:
    """Cut the graph at the NonMaxSuppression node's inputs: outputs become boxes [N, M, 4] (already in
    original-image pixels) and scores [N, C, M]. Returns the NMS thresholds found in the graph, or None
    when the graph has no NMS."""
    from fastdet_cli.lazy import require

    onnx = require("onnx", "base", "export")
    model = onnx.load(str(src))
    nms_nodes = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    if not nms_nodes:
        return None
    node = nms_nodes[0]
    boxes, scores = node.input[0], node.input[1]
    consts = constant_values(model.graph)
    found = {}
    for idx, key in ((2, "max_output_boxes_per_class"), (3, "nms_threshold"), (4, "score_threshold")):
        if len(node.input) > idx and node.input[idx]:
            v = consts.get(node.input[idx])
            if v is not None:
                found[key] = float(np.asarray(v).reshape(-1)[0])
    inputs = [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    onnx.utils.extract_model(str(src), str(dst), inputs, [boxes, scores])
    cut = onnx.load(str(dst))
    # stable, readable output names for the post-processing
    rename = {boxes: "boxes", scores: "scores"}
    for n in cut.graph.node:
        n.output[:] = [rename.get(o, o) for o in n.output]
    for o in cut.graph.output:
        o.name = rename.get(o.name, o.name)
    onnx.save(cut, str(dst))
    return found


def _producers_and_readers(graph) -> tuple[dict, dict[str, int]]:
    """{tensor: the node writing it}, {tensor: how many nodes and graph outputs read it}."""
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    for o in graph.output:
        readers[o.name] = readers.get(o.name, 0) + 1
    return producer, readers


def _opset_at_least(model, version: int) -> None:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < version:
            op.version = version


class _OnnxOps:
    """An ONNX graph as the hard-swish matcher reads it (hard_swish.OpGraph)."""

    KINDS = {"Add": "add", "Mul": "mul", "Div": "div", "Clip": "clip", "HardSigmoid": "hard_sigmoid"}

    def __init__(self, graph):
        self.consts = constant_values(graph)
        self._producer, self._readers = _producers_and_readers(graph)

    def producer(self, value: str):
        return self._producer.get(value)

    def readers(self, value: str) -> int:
        return self._readers.get(value, 0)

    def kind(self, op) -> str:
        return self.KINDS.get(op.op_type, "")

    def inputs(self, op) -> list[str]:
        return list(op.input[:1]) if op.op_type in ("Clip", "HardSigmoid") else list(op.input)

    def output(self, op) -> str:
        return op.output[0]

    def constant(self, value: str) -> float | None:
        v = self.consts.get(value)
        return float(np.asarray(v).reshape(-1)[0]) if v is not None and np.asarray(v).size == 1 else None

    def params(self, op) -> dict[str, float | None]:
        attrs = {a.name: a.f for a in op.attribute}
        if op.op_type == "Clip":  # bounds as inputs from opset 11, as attributes before
            if len(op.input) >= 3:
                return {"lo": self.constant(op.input[1]), "hi": self.constant(op.input[2])}
            return {"lo": attrs.get("min"), "hi": attrs.get("max")}
        if op.op_type == "HardSigmoid":
            return {"slope": attrs.get("alpha", 0.2), "offset": attrs.get("beta", 0.5)}
        return {}


def _replace_by_hardswish(graph, found, name: str) -> None:
    """One HardSwish node where the last of `found`'s nodes was; its nodes removed."""
    from onnx import helper

    graph.node.insert(list(graph.node).index(found.ops[-1]),
                      helper.make_node("HardSwish", [found.x], [found.out], name=name))
    for n in found.ops:
        graph.node.remove(n)


def _drop_unread_constants(graph) -> None:
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for n in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in read]:
        graph.node.remove(n)
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def fuse_hardswish(model) -> int:
    """Replace every hard-swish written as elementary ops — x · clip(x + 3, 0, 6) / 6 (Add → Clip → Mul → Div, or
    Mul by 1/6), how paddle2onnx writes it at opset 13 — by one HardSwish node (opset 14), in place. Returns how
    many were fused. Quantizers put a Q/DQ pair on every elementary op's output (four roundings per activation
    instead of none) and runtimes stop fusing the activation into the convolution once Q/DQ pairs sit between
    its pieces; one HardSwish node is what the network computes. The pattern: hard_swish.match_pieces."""
    graph = model.graph
    found = find_all(_OnnxOps(graph), list(graph.node), match_pieces)
    for m in found:
        _replace_by_hardswish(graph, m, f"{m.ops[-1].name or m.x}_hardswish")
    if found:  # the pieces' constants are read by nothing now
        _drop_unread_constants(graph)
        _opset_at_least(model, 14)  # HardSwish is opset 14; the ops paddle2onnx writes mean the same there
    return len(found)


def split_hardswish(model) -> int:
    """The reverse of `fuse_hardswish`, in place: every HardSwish node written as x · clip(x + 3, 0, 6) / 6 (for
    converters without HardSwish, e.g. x2paddle 1.6.0). Returns how many were split."""
    from onnx import TensorProto, helper

    graph = model.graph
    split = 0
    consts = {}

    def const(value: float) -> str:
        if value not in consts:
            name = f"fastdet_hardswish_const_{len(consts)}"
            graph.initializer.append(helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
            consts[value] = name
        return consts[value]

    for node in list(graph.node):
        if node.op_type != "HardSwish":
            continue
        x, y, base = node.input[0], node.output[0], node.name or node.output[0]
        idx = list(graph.node).index(node)
        graph.node.remove(node)
        pieces = [helper.make_node("Add", [x, const(3.0)], [f"{base}_plus3"], name=f"{base}_add"),
                  helper.make_node("Clip", [f"{base}_plus3", const(0.0), const(6.0)], [f"{base}_clip"],
                                   name=f"{base}_clip"),
                  helper.make_node("Mul", [x, f"{base}_clip"], [f"{base}_mul"], name=f"{base}_mul"),
                  helper.make_node("Div", [f"{base}_mul", const(6.0)], [y], name=f"{base}_div")]
        for i, p in enumerate(pieces):
            graph.node.insert(idx + i, p)
        split += 1
    return split


def hardsigmoid_mul_to_hardswish(model) -> int:
    """Every x · HardSigmoid(x) with HardSwish's constants (alpha 1/6, beta 0.5; how paddle2onnx writes Paddle's
    hard_swish op) as one HardSwish node, in place. Returns how many. The pattern: hard_swish.match_gated."""
    graph = model.graph
    found = find_all(_OnnxOps(graph), list(graph.node), match_gated)
    for m in found:
        _replace_by_hardswish(graph, m, f"{m.ops[-1].name or m.out}_hardswish")
    if found:
        _opset_at_least(model, 14)
    return len(found)


def hard_swish_pieces(model) -> int:
    """Every hard-swish — a HardSwish node or x · HardSigmoid(x) — written as x · clip(x + 3, 0, 6) / 6, in place:
    the form OpenVINO fuses with the convolution before it in INT8. Given HardSigmoid · x (a Paddle export of a
    hard_swish op), OpenVINO's INT8 ran the real-weight PicoDet's converted program at 88.6 ms against 75.9 ms in
    FP32 (2026-12-06, Zen 4). Returns how many were rewritten."""
    hardsigmoid_mul_to_hardswish(model)
    return split_hardswish(model)
