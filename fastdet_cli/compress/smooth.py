"""Input-channel smoothing for OpenVINO's INT8 form: each regular convolution's input divided per channel by s,
its weights multiplied by s along the input channels — the same function in float, easier ranges in INT8.

After a hard-swish the input channels of a 1×1 convolution span very different ranges (0.01 to 10 on the
real-weight PicoDet), and one activation scale per tensor rounds the small channels to a few levels. A depthwise
convolution takes a scale per channel (compress/depthwise.py); a regular one cannot (each output sums every input
channel), but the spread can be moved into the weights, which are quantized per output channel: x' = x / s,
W' = W · s with s_c = r_c^α / w_c^(1−α) (r_c the channel's largest |x| over the calibration images, w_c its largest
|W|; SmoothQuant's rule, α = 0.5 splits the spread evenly between activations and weights). The division is a Mul
in front of the input's QuantizeLinear: OpenVINO folds it into the FakeQuantize's input ranges (every convolution
stays u8 in its runtime model). ONNX Runtime's and TensorRT's forms would run that Mul as an op of its own, so
they are not smoothed.

Measured on the real-weight PicoDet (Zen 4, 2026-12-06, OpenVINO's form with depthwise ranges per channel,
calibration chosen on two halves of the calib pages, each measured on the other): mean agreement with FP32
0.900 without, 0.914 at α 0.75, **0.932 at α 0.5**, 0.894 at α 0.3 — every calibration tried and both halves
better at 0.5 and 0.75; runtime 35.1 vs 33.9 ms (FP32 71 ms).

A depthwise convolution whose input a Concat makes cannot have its range per channel in OpenVINO's form
(compress/depthwise.py): it is smoothed instead, at α 1 — filter c reads channel c only, so its factor goes along
the weight's output axis, each channel spans the same range after the division, and one range per tensor there is
a range per channel before it. Measured on the embedded model (Zen 5, 2026-12-07): three of its neck's four such
inputs made 0.0014 of the 0.0047 distillation loss of the all-INT8 form (each activation quantized alone, 12
images); smoothed, the form's loss fell 0.00468 → 0.00430 on 40 images that play no part in making it, every
convolution still u8.
"""
from __future__ import annotations

import numpy as np

DEFAULT_ALPHA = 0.5
MIN_CHANNELS = 4  # the stem's 3-channel image input is left alone


def smoothable(model) -> dict[str, list]:
    """{float tensor: the convolutions (constant weight) that read it} for every activation (not a graph input)
    read by regular convolutions (group 1) with at least MIN_CHANNELS input channels, or only by depthwise ones
    after a Concat (compress/depthwise.py's `after_concat`: they cannot have a range per channel in
    OpenVINO's form, so they are smoothed at α 1 — the factor of channel c goes into depthwise filter c, and a range
    per tensor after the division is a range per channel before it)."""
    from fastdet_cli.compress.depthwise import after_concat

    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    out: dict[str, list] = {}
    depthwise: dict[str, list] = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.input[0] not in producer or node.input[1] not in init:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group == 1 and init[node.input[1]].dims[1] >= MIN_CHANNELS:
            out.setdefault(node.input[0], []).append(node)
        elif group > 1 and init[node.input[1]].dims[1] == 1 and after_concat(node.input[0], producer, init):
            depthwise.setdefault(node.input[0], []).append(node)
    readers: dict[str, int] = {}
    for node in graph.node:
        for i in set(node.input):
            readers[i] = readers.get(i, 0) + 1
    out.update({t: convs for t, convs in depthwise.items() if t not in out and readers[t] == len(convs)})
    return out


def _is_depthwise(conv) -> bool:
    return next((a.i for a in conv.attribute if a.name == "group"), 1) > 1


def factors(absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s per input channel: r^α / w^(1−α), normalised to a geometric mean of 1 (the tensor's overall scale
    stays where it was)."""
    w = np.max([np.abs(x).max(axis=(0, 2, 3)) for x in weights], axis=0)
    r, w = np.maximum(absmax, 1e-5), np.maximum(w, 1e-5)
    s = r ** alpha / w ** (1 - alpha)
    return s / np.exp(np.mean(np.log(s)))


def smooth(model, absmax: dict[str, np.ndarray], alpha: float) -> int:
    """Smooth `model` in place: for each tensor of `absmax` ({tensor: largest |x| per channel}) among
    `smoothable(model)`, one Mul by 1/s read by its regular convolutions, whose weights become W · s.
    Returns how many tensors were smoothed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    done = 0
    for tensor, convs in smoothable(model).items():
        if tensor not in absmax:
            continue
        weights = [numpy_helper.to_array(init[c.input[1]]) for c in convs]
        depthwise = _is_depthwise(convs[0])
        if depthwise:  # filter c reads channel c only: its factor goes along the output axis, all of the spread
            weights = [w.transpose(1, 0, 2, 3) for w in weights]
        s = factors(np.asarray(absmax[tensor], np.float64), weights, 1.0 if depthwise else alpha)
        name = f"{tensor}_fastdet_smooth"
        graph.initializer.append(numpy_helper.from_array((1 / s).astype(np.float32).reshape(1, -1, 1, 1),
                                                         f"{name}_factor"))
        for conv, w in zip(convs, weights):
            scaled = f"{conv.input[1]}_fastdet_smooth_{conv.name}"
            w = w * s.reshape(1, -1, 1, 1)
            graph.initializer.append(numpy_helper.from_array(
                (w.transpose(1, 0, 2, 3) if depthwise else w).astype(np.float32), scaled))
            conv.input[1], conv.input[0] = scaled, name
        outs = {c.output[0] for c in convs}
        at = min(i for i, n in enumerate(graph.node) if n.output and n.output[0] in outs)
        graph.node.insert(at, helper.make_node("Mul", [tensor, f"{name}_factor"], [name], name=name))
        done += 1
    return done
