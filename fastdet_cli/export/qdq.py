"""Rewriting the Q/DQ pairs paddle2onnx writes, for accuracy and so ONNX Runtime runs the convolutions in INT8.

1. `restrict_to_compute_inputs`: PaddleSlim's quantized program quantizes the inputs of convolutions (and
   their weights) only; paddle2onnx 1.3.1 also writes Q/DQ pairs on other activations (HardSwish, Sigmoid,
   Add, Concat outputs…) from the program's out-scale attributes, and on this project's PicoDet those scales
   are wrong: the INT8 ONNX lost 0.26 mAP against Paddle Inference running the same quantized program (measured
   in docs/performance.md). Consumers that are not convolutions are rewired to the float tensor, which is what
   the Paddle program computes; the pairs left unused are removed (fewer float islands, too).
2. `activations_to_uint8`:

paddle2onnx writes activations as *signed* int8 with zero point 0. ONNX Runtime's CPU kernels want uint8
activations (u8 × s8 is the fast path on x86), and with int8 activations its graph optimizer leaves most conv
groups in float, dequantizing their weights at every run: INT8 ends up slower than FP32. Shifting every
activation Q/DQ pair to uint8 with zero point 128 is exactly the same function (q_u8 = q_s8 + 128,
(q_u8 − 128)·s = q_s8·s), and lets ORT fuse the groups into QLinearConv.
3. `reduce_weight_range`: x86 CPUs without VNNI (AVX2, AVX512F) multiply u8 activations by s8 weights with
   `vpmaddubsw`, which adds pairs of products into int16 and *saturates*: 2 × 255 × 127 overflows. OpenVINO
   on this AVX2 machine lost 4.9 mAP points on the embedded model's INT8 export (0.533 vs 0.580 on ONNX Runtime)
   and got them back with weights limited to 7 bits (0.577). Rescaling each weight Q/DQ pair so the largest
   weight maps to ±63 is what ONNX Runtime's quantizer calls `reduce_range` and OpenVINO's NNCF `overflow_fix`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastdet_cli.hard_swish import is_gate
from fastdet_cli.onnx_graph import constant_values


def _consumers(graph) -> dict[str, list]:
    """Tensor name → the nodes reading it."""
    out: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def restrict_to_compute_inputs(src: Path, dst: Path) -> int:
    """Keep activation Q/DQ only where a convolution (or matmul) reads it; return how many consumer inputs
    were rewired to float."""
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    q_input = {n.output[0]: n.input[0] for n in graph.node
               if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    dq_float = {n.output[0]: q_input[n.input[0]] for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in q_input}
    rewired = 0
    for n in graph.node:
        if n.op_type in COMPUTE_OPS or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(n.input):
            if name in dq_float:
                n.input[k] = dq_float[name]
                rewired += 1
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    # drop DQ nodes nobody reads any more, then the Q nodes that fed only them
    keep = [n for n in graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] in dq_float
                                          and n.output[0] not in used)]
    used = {name for n in keep for name in n.input} | {o.name for o in graph.output}
    keep = [n for n in keep if not (n.op_type == "QuantizeLinear" and n.output[0] in q_input
                                    and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(keep)
    onnx.save(model, str(dst))
    return rewired


def activations_to_uint8(src: Path, dst: Path) -> int:
    """Write `dst` with every activation QuantizeLinear (and the DequantizeLinear nodes reading it) moved from
    int8/zero-point-0 to uint8/zero-point-128. Weight pairs (constant inputs: initializers or Constant nodes) stay int8.
    Returns the number of Q nodes rewritten."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    graph = model.graph
    vals = constant_values(graph)
    inits = {i.name for i in graph.initializer}
    consumers = _consumers(graph)
    u8_zero = "fastdet_u8_zero_point_128"
    rewritten_outputs = set()
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in vals or len(q.input) < 3:  # constants are weights
            continue
        zp = vals.get(q.input[2])
        if zp is None or zp.dtype != np.int8 or zp.size != 1 or int(zp.reshape(-1)[0]) != 0:
            continue
        users = consumers.get(q.output[0], [])
        graph_outputs = {o.name for o in graph.output}
        if not users or q.output[0] in graph_outputs or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        shape = list(zp.shape)
        name = u8_zero if not shape else f"{u8_zero}_{'x'.join(map(str, shape))}"
        if name not in inits:
            graph.initializer.append(helper.make_tensor(name, TensorProto.UINT8, shape, [128]))
            inits.add(name)
        q.input[2] = name
        for dq in users:
            dq.input[2] = name
        rewritten_outputs.add(q.output[0])
    for vi in graph.value_info:  # shape inference recorded the old int8 type of these tensors
        if vi.name in rewritten_outputs:
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    used = {name for n in graph.node for name in n.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:  # the old int8 zero points
        graph.initializer.remove(init)
    onnx.save(model, str(dst))
    return len(rewritten_outputs)



def reduce_weight_range(src: Path, dst: Path, bits: int = 7) -> int:
    """Write `dst` with every weight QuantizeLinear → DequantizeLinear pair (a constant quantized to int8)
    rescaled to `bits`-bit values: scale × 127 / (2^(bits-1) − 1). Returns the number of pairs rescaled."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    vals = constant_values(graph)
    consumers = _consumers(graph)
    factor = np.float32(127.0 / (2 ** (bits - 1) - 1))
    done = 0
    for q in list(graph.node):
        # a weight is a constant (an initializer or, as paddle2onnx writes it, a Constant node)
        if q.op_type != "QuantizeLinear" or q.input[0] not in vals or len(q.input) < 3:
            continue
        zp, scale = vals.get(q.input[2]), vals.get(q.input[1])
        dqs = consumers.get(q.output[0], [])
        if zp is None or scale is None or zp.dtype != np.int8 or np.any(zp != 0) or not dqs or any(
                d.op_type != "DequantizeLinear" or d.input[1] != q.input[1] for d in dqs):
            continue
        name = f"{q.input[1]}_fastdet_{bits}bit"
        graph.initializer.append(numpy_helper.from_array((scale * factor).astype(np.float32), name))
        q.input[1] = name
        for dq in dqs:
            dq.input[1] = name
        done += 1
    onnx.save(model, str(dst))
    return done


def fold_weight_quantize(model) -> int:
    """Replace every QuantizeLinear of a constant weight by its int8 result as an initializer (ORT's QDQ fusion
    needs the weight's DequantizeLinear to read an initializer; its constant folding leaves Q nodes alone)."""
    from onnx import numpy_helper

    graph = model.graph
    vals = constant_values(graph)
    folded, keep, per_channel_zp = 0, [], {}
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in vals and len(n.input) >= 3 and n.input[2] in vals:
            w, scale, zp = vals[n.input[0]], vals[n.input[1]], vals[n.input[2]]
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            if np.asarray(scale).size > 1:
                shape[axis] = -1
            safe = np.where(np.asarray(scale) == 0, 1.0, scale).reshape(shape)  # an all-zero channel has scale 0
            q = np.round(w / safe) + np.asarray(zp).astype(np.int32).reshape(shape)
            info = np.iinfo(zp.dtype)
            graph.initializer.append(numpy_helper.from_array(np.clip(q, info.min, info.max).astype(zp.dtype),
                                                             n.output[0]))
            if np.asarray(scale).size > 1 and np.asarray(zp).size == 1:  # per-channel scale: zero point alike
                zname = f"{n.output[0]}_zero_points"
                graph.initializer.append(numpy_helper.from_array(
                    np.full(np.asarray(scale).shape, np.asarray(zp).reshape(-1)[0], zp.dtype), zname))
                per_channel_zp[n.output[0]] = zname
            folded += 1
            continue
        keep.append(n)
    for n in keep:
        if n.op_type == "DequantizeLinear" and n.input[0] in per_channel_zp:
            n.input[2] = per_channel_zp[n.input[0]]
    del graph.node[:]
    graph.node.extend(keep)
    return folded


def float_biases(src: Path, dst: Path) -> int:
    """Every DequantizeLinear of an int32 constant (paddle2onnx's quantized conv biases) replaced by the float
    constant it computes: TensorRT's parser takes int8 Q/DQ only. Returns how many were replaced."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    vals = constant_values(graph)
    keep, done = [], 0
    for n in graph.node:
        if (n.op_type == "DequantizeLinear" and n.input[0] in vals and vals[n.input[0]].dtype == np.int32
                and all(i in vals for i in n.input[1:3])):
            q, scale, zp = (np.asarray(vals[i], np.float64) for i in n.input[:3])
            graph.initializer.append(numpy_helper.from_array(((q - zp) * scale).astype(np.float32), n.output[0]))
            done += 1
            continue
        keep.append(n)
    del graph.node[:]
    graph.node.extend(keep)
    prune_dead_nodes(model)
    onnx.save(model, str(dst))
    return done


def prune_dead_nodes(model) -> int:
    """Remove the nodes no graph output depends on (none of whose outputs is read by a node that stays or as a
    graph output), and the initializers left unread. Returns how many nodes went. One walk back from the outputs
    (removing the unread ones round by round took 1.6 s a cut on the real-weight PicoDet's Q/DQ graph)."""
    graph = model.graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    live: set[int] = set()
    stack = [o.name for o in graph.output]
    while stack:
        i = producer.get(stack.pop())
        if i is not None and i not in live:
            live.add(i)
            stack.extend(graph.node[i].input)
    removed = len(graph.node) - len(live)
    if removed:
        keep = [n for i, n in enumerate(graph.node) if i in live]
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    if any(i.name not in used for i in graph.initializer):
        inits = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(inits)
    return removed


# what every rewritten gate reads: key → (initializer name, value)
_GATE_CONSTANTS = {"three": ("fastdet_hs_three_u8", np.array(255, np.uint8)),
                   "three_scale": ("fastdet_hs_three_scale", np.array(3 / 255, np.float32)),
                   "zp": ("fastdet_hs_zp_u8", np.array(0, np.uint8)),
                   "zero": ("fastdet_hs_zero", np.array(0, np.float32)),
                   "six": ("fastdet_hs_six", np.array(6, np.float32)),
                   "t_scale": ("fastdet_hs_t_scale", np.array(6 / 255, np.float32)),
                   "h_scale": ("fastdet_hs_h_scale", np.array(1 / 255, np.float32))}


def _integer_gate_sites(graph) -> list[tuple]:
    """(HardSigmoid, the QuantizeLinear it feeds, the DequantizeLinears reading that) for every hard-swish gate
    between a uint8 DequantizeLinear and one uint8 QuantizeLinear whose results only DequantizeLinears read."""
    consumers = _consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    vals = constant_values(graph)
    outputs = {o.name for o in graph.output}

    def uint8_zp(node) -> bool:
        return len(node.input) >= 3 and node.input[2] in vals and vals[node.input[2]].dtype == np.uint8

    def attr(node, name: str, default: float) -> float:
        return next((a.f for a in node.attribute if a.name == name), default)

    sites = []
    for n in graph.node:
        if n.op_type != "HardSigmoid" or not is_gate(attr(n, "alpha", 0.2), attr(n, "beta", 0.5)):
            continue
        dq_in = producer.get(n.input[0])
        users = consumers.get(n.output[0], [])
        if dq_in is None or dq_in.op_type != "DequantizeLinear" or not uint8_zp(dq_in) or n.output[0] in outputs \
                or len(users) != 1 or users[0].op_type != "QuantizeLinear" or not uint8_zp(users[0]):
            continue
        readers = consumers.get(users[0].output[0], [])
        if readers and users[0].output[0] not in outputs and all(r.op_type == "DequantizeLinear" for r in readers):
            sites.append((n, users[0], readers))
    return sites


def _integer_gate(n, q, readers) -> list:
    """The nodes that replace the HardSigmoid `n` (DQ(3) + x → Clip 0..6); `q` and its `readers` rewired to read
    the clipped sum at scale 6/255 and its integers at 1/255."""
    from onnx import helper

    shared = {key: name for key, (name, _) in _GATE_CONSTANTS.items()}
    base = n.name or n.output[0]
    added = [helper.make_node("DequantizeLinear", [shared["three"], shared["three_scale"], shared["zp"]],
                              [f"{base}_three"], name=f"{base}_three_dq"),  # one per site: ORT's fusion
             helper.make_node("Add", [n.input[0], f"{base}_three"], [f"{base}_plus3"], name=f"{base}_add3"),
             helper.make_node("Clip", [f"{base}_plus3", shared["zero"], shared["six"]], [f"{base}_clip06"],
                              name=f"{base}_clip06")]
    q.input[:] = [f"{base}_clip06", shared["t_scale"], shared["zp"]]
    for r in readers:
        r.input[1:3] = [shared["h_scale"], shared["zp"]]
    return added


def integer_hard_sigmoid(model) -> int:
    """Rewrite every quantized hard-sigmoid of a uint8 QDQ graph so ONNX Runtime runs it in integer kernels, in
    place; returns how many. ORT's CPU provider has no integer HardSigmoid: `DQ(y) → HardSigmoid → Q` stays a float
    island (dequantize, the op, quantize: 80 of them cost 1.6 of 6.1 profiled ms on the embedded model, and
    hard-swish = x · HardSigmoid(x) sits after nearly every convolution of PicoDet/LCNet backbones). For
    HardSigmoid(alpha=1/6, beta=1/2), y ↦ clip(y/6 + 1/2, 0, 1) is written with ops ORT does fuse:
    `t = Q(Clip(DQ(y) + DQ(3), 0, 6), scale 6/255, zero point 0)` — QLinearAdd (both inputs from a
    DequantizeLinear, same uint8 type), its Clip deleted by ClipQuantFusion because the QuantizeLinear saturates to
    [0, 6] itself — and the consumers read `DQ(t, scale 1/255, zero point 0)`: the same integers read as
    (y + 3)/6, no divide. The following Mul(x, ·) → Q is a QLinearMul already. The result keeps 255 levels
    over [0, 1] as a calibrated uint8 output of the hard-sigmoid does. Only where the input comes from a uint8
    DequantizeLinear and the output goes to one QuantizeLinear (uint8) whose results only DequantizeLinears read
    (ONNX Runtime's form; TensorRT's int8 form is left alone). ../shared/TOOLCHAIN.md has the probe's figures."""
    from onnx import numpy_helper

    graph = model.graph
    # HardSigmoid's output → the nodes that replace it
    new_nodes = {n.output[0]: _integer_gate(n, q, readers) for n, q, readers in _integer_gate_sites(graph)}
    if not new_nodes:
        return 0
    for name, value in _GATE_CONSTANTS.values():
        graph.initializer.append(numpy_helper.from_array(value, name))
    nodes = [m for n in graph.node for m in (new_nodes.get(n.output[0], [n]) if n.op_type == "HardSigmoid" else [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(new_nodes)
