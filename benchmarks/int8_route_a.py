"""Route (a) of ONNX Runtime INT8, built for measurement: PaddleSlim's quantized program (Q/DQ on convolution
inputs only) exported to ONNX, then every convolution's *output* quantized to uint8 with an asymmetric range
calibrated on the calibration images (through the model's own preprocessing), so ORT can fuse QLinearConv.
The other route is `fastdet compress --engine onnxruntime`; docs/performance.md compares the two. The graph
rewrite lives here, not in fastdet_cli/: nothing but this experiment uses it.

    python benchmarks/int8_route_a.py PADDLESLIM_INT8_DIR OUT_DIR [--images 32]
then time it with benchmarks/int8_routes.py and measure mAP with `fastdet eval -m OUT_DIR -b ort`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def calibrate_conv_outputs(model_path: Path, feeds: list[dict]) -> dict[str, tuple[float, float]]:
    """Min and max of every convolution output of `model_path` over `feeds` (fastdet's ONNX Runtime runner on
    the graph with those outputs added as graph outputs)."""
    import onnx

    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    model = onnx.load(str(model_path))
    names = [n.output[0] for n in model.graph.node if n.op_type == "Conv"]
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    options = RunnerOptions(threads=os.cpu_count() or 1)
    with create_runner("ort", model.SerializeToString(), options) as runner:
        outputs = runner.output_names()
        for feed in feeds:
            values = dict(zip(outputs, runner.infer(feed)))
            for n in names:
                lo[n], hi[n] = min(lo[n], float(values[n].min())), max(hi[n], float(values[n].max()))
    return {n: (lo[n], hi[n]) for n in names}


def quantize_conv_outputs(src: Path, dst: Path, ranges: dict[str, tuple[float, float]]) -> int:
    """After every convolution that reads a Q/DQ-quantized input, add a uint8 QuantizeLinear → DequantizeLinear
    pair on its output with the asymmetric range `ranges[output]` (calibrated min, max), so that ORT sees
    DequantizeLinear → Conv → QuantizeLinear and fuses a QLinearConv. Returns the number of pairs added."""
    import onnx
    from onnx import TensorProto, helper

    from fastdet_cli.export.qdq import fold_weight_quantize
    from fastdet_cli.onnx_graph import constant_values

    model = onnx.load(str(src))
    graph = model.graph
    vals = constant_values(graph)
    producer = {o: n for n in graph.node for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    new_nodes, added = [], 0
    for node in graph.node:
        new_nodes.append(node)
        if node.op_type != "Conv" or node.output[0] not in ranges or node.output[0] in graph_outputs:
            continue
        src_dq = producer.get(node.input[0])
        if src_dq is None or src_dq.op_type != "DequantizeLinear":
            continue
        bias = _float_bias(node, vals, producer)
        if bias is not None:  # ORT fuses only an int32 bias with scale = input scale × weight scale
            bias_dq = _int32_bias(graph, node, bias, vals, producer)
            if bias_dq is not None:
                new_nodes.insert(len(new_nodes) - 1, bias_dq)
        lo, hi = ranges[node.output[0]]
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)  # the range must hold zero exactly
        scale = max((hi - lo) / 255.0, 1e-8)
        zero = int(round(-lo / scale))
        out = node.output[0]
        raw = f"{out}_fastdet_raw"
        node.output[0] = raw
        s_name, z_name = f"{out}_fastdet_scale", f"{out}_fastdet_zp"
        graph.initializer.extend([helper.make_tensor(s_name, TensorProto.FLOAT, [], [scale]),
                                  helper.make_tensor(z_name, TensorProto.UINT8, [], [min(max(zero, 0), 255)])])
        new_nodes.append(helper.make_node("QuantizeLinear", [raw, s_name, z_name], [f"{out}_fastdet_q"],
                                          name=f"{node.name}_fastdet_out_q"))
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{out}_fastdet_q", s_name, z_name], [out],
                                          name=f"{node.name}_fastdet_out_dq"))
        added += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    fold_weight_quantize(model)
    onnx.save(model, str(dst))
    return added


def _float_bias(conv, vals, producer):
    """The float bias of `conv`: a constant, or a constant behind a DequantizeLinear (paddle2onnx writes its
    int32 bias with the 8-bit weight scale, which the 7-bit rewrite no longer matches)."""
    if len(conv.input) < 3 or not conv.input[2]:
        return None
    name = conv.input[2]
    if name in vals:
        return vals[name].astype(np.float64)
    dq = producer.get(name)
    if dq is not None and dq.op_type == "DequantizeLinear" and all(i in vals for i in dq.input[:3]):
        q, scale, zp = (np.asarray(vals[i], np.float64) for i in dq.input[:3])
        return (q - zp) * scale
    return None


def _int32_bias(graph, conv, bias, vals, producer):
    """Replace the float bias of `conv` by int32 values behind a DequantizeLinear with scale = input scale ×
    weight scale (per output channel), as ONNX Runtime's QLinearConv takes it."""
    from onnx import helper, numpy_helper

    dq_in, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
    if dq_w is None or dq_w.op_type != "DequantizeLinear":
        return None
    s_in = vals.get(dq_in.input[1])
    s_w = vals.get(dq_w.input[1])
    if s_in is None or s_w is None:
        return None
    scale = (float(np.asarray(s_in).reshape(-1)[0]) * np.broadcast_to(np.asarray(s_w, np.float64).reshape(-1),
                                                                       bias.shape)).astype(np.float32)
    q = np.clip(np.round(bias / np.maximum(scale, 1e-12)), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    name = f"{conv.input[2]}_fastdet_int32"
    graph.initializer.extend([numpy_helper.from_array(q, name), numpy_helper.from_array(scale, name + "_scale"),
                              numpy_helper.from_array(np.zeros_like(q), name + "_zp")])
    dq = helper.make_node("DequantizeLinear", [name, name + "_scale", name + "_zp"], [name + "_dq"],
                          name=f"{conv.name}_fastdet_bias_dq", axis=0)
    conv.input[2] = name + "_dq"
    return dq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("int8_model", help="a PaddleSlim quantized model dir (fastdet compress output)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, default=32, help="calibration images (the generated calib split)")
    args = ap.parse_args()

    from fastdet_cli.compress.samples import FeedSamples, image_list
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.artifacts import onnx_for

    src = onnx_for(resolve_model(args.int8_model))
    inputs = ["image", "scale_factor"]
    samples = FeedSamples(src, image_list("default", args.images), inputs)
    import onnx

    names = [i.name for i in onnx.load(str(src.path), load_external_data=False).graph.input]
    feeds = [{k: v[None] for k, v in samples[i].items() if k in names} for i in range(len(samples))]
    ranges = calibrate_conv_outputs(src.path, feeds)
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src.dir, tmp)
    n = quantize_conv_outputs(src.path, tmp / "model.onnx", ranges)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"{n} convolution outputs quantized (uint8, asymmetric, {len(feeds)} calibration images) → {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
