"""Reading an ONNX graph without running it (its constants, the settings of its NMS node) and cutting it before
its NMS."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def constant_values(graph) -> dict[str, np.ndarray]:
    """Every constant tensor of `graph` by name: initializers and Constant nodes (paddle2onnx writes both)."""
    from onnx import numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            vals[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return vals


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


def fuse_hardswish(model) -> int:
    """Replace every hard-swish written as elementary ops — x · clip(x + 3, 0, 6) / 6 (Add → Clip → Mul → Div, or
    Mul by 1/6), how paddle2onnx writes it at opset 13 — by one HardSwish node (opset 14), in place. Returns how
    many were fused. Quantizers put a Q/DQ pair on every elementary op's output (four roundings per activation
    instead of none) and runtimes stop fusing the activation into the convolution once Q/DQ pairs sit between
    its pieces; one HardSwish node is what the network computes."""
    from onnx import helper

    graph = model.graph
    consts = constant_values(graph)
    producer, users = _producers_and_readers(graph)

    def scalar(name: str) -> float | None:
        v = consts.get(name)
        return float(np.asarray(v).reshape(-1)[0]) if v is not None and np.asarray(v).size == 1 else None

    def near(v: float | None, want: float) -> bool:
        return v is not None and abs(v - want) <= 1e-6 * max(1.0, abs(want))

    def other(node, name: str) -> str | None:
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    def clip_bounds(clip) -> tuple[float | None, float | None]:
        if len(clip.input) >= 3:
            return scalar(clip.input[1]), scalar(clip.input[2])
        attrs = {a.name: a.f for a in clip.attribute}
        return attrs.get("min"), attrs.get("max")

    fused, dead = 0, set()
    for last in list(graph.node):
        if last.op_type not in ("Div", "Mul") or last.name in dead:
            continue
        tail = {"Div": 6.0, "Mul": 1 / 6}[last.op_type]
        prod = next((producer.get(i) for i in last.input if producer.get(i) is not None
                     and producer[i].op_type == "Mul" and near(scalar(other(last, i) or ""), tail)), None)
        if prod is None or users.get(prod.output[0]) != 1:
            continue
        clip = next((producer.get(i) for i in prod.input if producer.get(i) is not None
                     and producer[i].op_type == "Clip"), None)
        if clip is None or users.get(clip.output[0]) != 1 or clip_bounds(clip) == (None, None):
            continue
        lo, hi = clip_bounds(clip)
        add = producer.get(clip.input[0])
        if (not (near(lo, 0.0) and near(hi, 6.0)) or add is None or add.op_type != "Add"
                or users.get(add.output[0]) != 1):
            continue
        x = other(prod, clip.output[0])
        if x is None or other(add, x) is None or not near(scalar(other(add, x)), 3.0):
            continue
        node = helper.make_node("HardSwish", [x], [last.output[0]], name=f"{last.name or x}_hardswish")
        idx = list(graph.node).index(last)
        graph.node.insert(idx, node)
        for n in (add, clip, prod, last):
            dead.add(n.name)
            graph.node.remove(n)
        fused += 1
    if fused:  # the pieces' constants are read by nothing now
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        for n in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in read]:
            graph.node.remove(n)
        for init in [i for i in graph.initializer if i.name not in read]:
            graph.initializer.remove(init)
        _opset_at_least(model, 14)  # HardSwish is opset 14; the ops paddle2onnx writes mean the same there
    return fused


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
    hard_swish op) as one HardSwish node, in place. Returns how many."""
    from onnx import helper

    graph = model.graph
    producer, users = _producers_and_readers(graph)
    done = 0
    for mul in list(graph.node):
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        for gate_in, x in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            gate = producer.get(gate_in)
            if gate is None or gate.op_type != "HardSigmoid" or gate.input[0] != x or users.get(gate_in) != 1:
                continue
            attrs = {a.name: a.f for a in gate.attribute}
            if abs(attrs.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
                continue
            idx = list(graph.node).index(mul)
            graph.node.insert(idx, helper.make_node("HardSwish", [x], [mul.output[0]],
                                                    name=f"{mul.name or mul.output[0]}_hardswish"))
            graph.node.remove(mul)
            graph.node.remove(gate)
            done += 1
            break
    if done:
        _opset_at_least(model, 14)
    return done


def hard_swish_pieces(model) -> int:
    """Every hard-swish — a HardSwish node or x · HardSigmoid(x) — written as x · clip(x + 3, 0, 6) / 6, in place:
    the form OpenVINO fuses with the convolution before it in INT8. Given HardSigmoid · x (a Paddle export of a
    hard_swish op), OpenVINO's INT8 ran the real-weight PicoDet's converted program at 88.6 ms against 75.9 ms in
    FP32 (2026-12-06, Zen 4). Returns how many were rewritten."""
    hardsigmoid_mul_to_hardswish(model)
    return split_hardswish(model)
