"""Reading an ONNX graph without running it: its constants and the settings of its NMS node."""
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
