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
