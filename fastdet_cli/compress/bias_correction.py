"""Bias correction: each INT8 convolution's bias shifted so that its output's mean per channel over the calibration
images is the FP32 model's — the systematic part of the rounding error (weights rounded per channel shift every
output of a channel the same way; a score map shifted down loses boxes at the draw threshold).

Done in graph order, each convolution measured with every convolution before it already corrected (correcting all at
once overshoots: measured on the real-weight PicoDet the mean shift grew 0.015 → 0.157 → 0.76 over three
all-at-once rounds). Convolutions at the same depth (the most convolutions on a path from the input) do not feed one
another, so each depth is one step. One ONNX Runtime session serves all the steps: the biases are fed as inputs.
Biases stored as int32 behind a DequantizeLinear (ONNX Runtime's quantizer writes them so) stay int32 at their scale.

Measured on the real-weight PicoDet (OpenVINO's form, Zen 4, 2026-12-06): calibrated and corrected on 10 calib
pages (8 for the correction), agreement with FP32 on the other 9 calib pages 0.906 → **0.959** (AP50 0.931 → 0.973;
0.986 when the int32 rounding was left to the end, with 20% of the shift left over: one or two boxes on 9 pages),
runtime unchanged (34.8 ms; every convolution still u8), 80–100 s (67 depth steps; 107 s one convolution at a time).
With the sensitivity search the correction is made on the model the search chose (its float convolutions keep
their biases) and kept only when it measures no worse on the search's images (compress/ort_engine.py): a correction
made for the all-INT8 model and kept when layers go back to float over-compensates (measured on the embedded model's
ORT form: 2 float layers gave 0.485 mAP corrected, 0.591 uncorrected).
"""
from __future__ import annotations

import copy

import numpy as np

DEFAULT_IMAGES = 8  # calibration images the shifts are measured on
CHUNK = 8  # depth steps per ONNX Runtime session (each cut after its own last convolutions)


def _bias_values(conv, producer: dict, vals: dict) -> tuple[np.ndarray, object | None]:
    """(float bias, how it is stored) of a convolution: None (a float constant), its DequantizeLinear of int32
    (ONNX Runtime's quantized bias), or the QuantizeLinear of a float constant in front of that (the search's
    probe keeps weights so)."""
    b = conv.input[2]
    if b in vals:
        return np.asarray(vals[b], np.float32), None
    dq = producer[b]
    if dq.input[0] not in vals:  # DequantizeLinear(QuantizeLinear(float constant))
        q = producer[dq.input[0]]
        return np.asarray(vals[q.input[0]], np.float32), q
    q, scale = np.asarray(vals[dq.input[0]], np.float64), np.asarray(vals[dq.input[1]], np.float64)
    zero = np.asarray(vals[dq.input[2]], np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    return ((q - zero) * scale).astype(np.float32), dq


def quantized_convs(model) -> list:
    """The convolutions with a bias whose input comes through a DequantizeLinear, in graph order."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2 and n.input[2]
            and n.input[0] in producer and producer[n.input[0]].op_type == "DequantizeLinear"]


def channel_means(session, outputs: list[str], feeds: list[dict], extra: dict | None = None) -> dict:
    """{output: mean over images, height and width, per channel} of `outputs` run on `feeds` (batch-1 feed dicts of
    one image size): in one run when every image input the session reads has a free batch axis (the embedded
    export's: its correction took 4.3 instead of 12.3 s, same shifts), else one run per image (the real-weight
    PicoDet's batch is fixed at 1)."""
    inputs = {i.name: i for i in session.get_inputs()}  # a truncated graph reads fewer inputs
    fed_keys = [k for k in feeds[0] if k in inputs] if feeds else []
    if len(feeds) > 1 and fed_keys and all(not isinstance(inputs[k].shape[0], int) for k in fed_keys):
        feeds = [{k: np.concatenate([f[k] for f in feeds]) for k in fed_keys}]
    sums: dict[str, np.ndarray] = {}
    for feed in feeds:
        fed = {k: v for k, v in {**feed, **(extra or {})}.items() if k in inputs}
        for name, value in zip(outputs, session.run(outputs, fed)):
            sums[name] = sums.get(name, 0) + value.mean(axis=(0, 2, 3))
    return {k: v / len(feeds) for k, v in sums.items()}


def correct_biases(model, fp32_graph, feeds: list[dict], progress=None) -> dict:
    """Correct the biases of `model` (an INT8 ONNX graph, in place) against `fp32_graph` (the FP32 graph it was
    quantized from: same convolution output names) on `feeds` (batch-1 feed dicts). Returns {convolutions, steps,
    images, mean_shift_corrected: the mean |shift| over channels and convolutions, each convolution's measured when it
    was corrected (the ones before it already corrected)}."""
    from onnx import TensorProto, helper

    from fastdet_cli.compress.sensitivity import session
    from fastdet_cli.export.qdq import prune_dead_nodes
    from fastdet_cli.onnx_graph import constant_values

    graph = model.graph
    convs = quantized_convs(model)
    producer = {o: n for n in graph.node for o in n.output}
    vals = constant_values(graph)
    biases, stored, original = {}, {}, {}
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer}
    for conv in convs:
        value, dq = _bias_values(conv, producer, vals)
        name = f"{conv.name or conv.output[0]}_fastdet_bias"
        while name in taken:  # corrected before: a new name
            name += "_"
        taken.add(name)
        biases[name], stored[name], original[name] = value, dq, conv.input[2]
        conv.input[2] = name
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    outputs = [c.output[0] for c in convs]
    reference = _with_outputs(fp32_graph, outputs)
    with session(reference) as fp32:
        target = channel_means(fp32.session, outputs, feeds)
    shifts = []
    steps = _depths(graph, convs)
    done = 0
    for chunk in [steps[i:i + CHUNK] for i in range(0, len(steps), CHUNK)]:
        # a session per chunk of steps, on the graph cut after its last convolutions: ONNX Runtime runs every node
        # of a session whatever output is asked for, so the early steps run a fraction of the model
        with session(_truncated(model, [c.output[0] for step in chunk for c in step])) as int8:
            for step in chunk:
                got = channel_means(int8.session, [c.output[0] for c in step], feeds, biases)
                for conv in step:
                    shift = got[conv.output[0]] - target[conv.output[0]]
                    shifts.append(float(np.abs(shift).mean()))
                    name = conv.input[2]
                    biases[name] = _on_grid(biases[name] - shift, stored[name], vals)
                done += 1
                if progress:
                    progress(done, len(steps))
    _store(graph, biases, stored, original, convs, vals)
    _sort(graph)
    prune_dead_nodes(model)
    return {"convolutions": len(convs), "steps": len(steps), "images": len(feeds),
            "mean_shift_corrected": float(np.mean(shifts)) if shifts else 0.0}


def _depths(graph, convs: list) -> list[list]:
    """`convs` grouped by depth (1 + the most convolutions on a path from the inputs to theirs), shallowest first:
    no convolution feeds another of its group."""
    names = {c.output[0] for c in convs}
    depth: dict[str, int] = {}
    for node in graph.node:  # graph order is topological
        d = max((depth.get(i, 0) for i in node.input), default=0)
        for o in node.output:
            depth[o] = d + (1 if o in names else 0)
    groups: dict[int, list] = {}
    for c in convs:
        groups.setdefault(depth[c.output[0]], []).append(c)
    return [groups[d] for d in sorted(groups)]


def _on_grid(value: np.ndarray, dq, vals: dict) -> np.ndarray:
    """`value` as the graph will hold it: an int32 bias rounded to its scale's grid at once, so that the
    convolutions after it are corrected against the bias they will really get (the grid step, input scale × weight
    scale, reached 0.003 on the embedded model's depthwise convolutions: rounding only at the end left 20% of the
    shift, spread downstream)."""
    if dq is None or dq.op_type != "DequantizeLinear":
        return value.astype(np.float32)
    scale = np.asarray(vals[dq.input[1]], np.float64)
    return (np.clip(np.round(value / scale), -2**31, 2**31 - 1) * scale).astype(np.float32)


def _store(graph, biases: dict, stored: dict, original: dict, convs: list, vals: dict) -> None:
    """The corrected biases written back as they were stored (float constant, int32 at its scale, or the float
    constant in front of the probe's Q/DQ pair), and the bias inputs removed from the graph's inputs."""
    from onnx import helper, numpy_helper

    inputs = [i for i in graph.input if i.name not in biases]
    del graph.input[:]
    graph.input.extend(inputs)
    for name, value in biases.items():
        dq = stored[name]
        if dq is None:
            graph.initializer.append(numpy_helper.from_array(value, name))
            continue
        if dq.op_type == "QuantizeLinear":  # a float constant behind a Q/DQ pair: the corrected one in front of it
            corrected = f"{name}_float"
            graph.initializer.append(numpy_helper.from_array(value, corrected))
            dq.input[0] = corrected
            reader = next(c for c in convs if c.input[2] == name)
            reader.input[2] = original[name]
            continue
        scale = np.asarray(vals[dq.input[1]], np.float64)
        graph.initializer.append(numpy_helper.from_array(
            np.clip(np.round(value / scale), -2**31, 2**31 - 1).astype(np.int32), f"{name}_quantized"))
        graph.node.append(helper.make_node("DequantizeLinear", [f"{name}_quantized", dq.input[1]], [name],
                                           name=f"{name}_dq", axis=0))  # one scale per output channel


def _truncated(model, names: list[str]):
    """A copy of `model` whose outputs are `names` only, the nodes they do not need removed, and the graph inputs
    nothing reads any more dropped."""
    from onnx import TensorProto, helper

    from fastdet_cli.export.qdq import prune_dead_nodes

    out = copy.deepcopy(model)
    del out.graph.output[:]
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    prune_dead_nodes(out)
    read = {i for n in out.graph.node for i in n.input}
    inputs = [i for i in out.graph.input if i.name in read]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    return out


def _with_outputs(model, names: list[str]):
    from onnx import TensorProto, helper

    out = copy.deepcopy(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names
                            if n not in have)
    return out


def _sort(graph) -> None:
    """Graph nodes in topological order (the bias DequantizeLinears were appended at the end)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
