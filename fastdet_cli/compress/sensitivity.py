"""Which quantized convolutions cost the accuracy: the graph surgery and the ranking of the per-layer sensitivity
search on an INT8 ONNX graph (the search's loop is compress/search.py, its measurement of a candidate
compress/variants.py).

Each convolution of the exported QDQ graph reads its input and weight through a QuantizeLinear →
DequantizeLinear pair (and, in ONNX Runtime's own QDQ form, writes its output through one). Wiring a
convolution to the float tensors instead gives the model with that one layer kept in float — no
re-calibration, no Paddle run — so every layer is tried in seconds with ONNX Runtime:

1. *isolated damage*: only layer i quantized, every other convolution in float; the error of the raw outputs
   against the FP32 model's on a few images ranks the layers (PaddleSlim's AnalysisPTQ idea, measured on
   outputs rather than mAP so that a hundred layers take a minute);
2. the most damaging layers are put in float one by one, and mAP is measured after each, until the drop is
   within the target (or the layer budget is spent).

The convolutions chosen are then skipped in a fresh PTQ run (PaddleSlim's `skip_tensor_list` takes their
weight names; ONNX Runtime's `nodes_to_exclude` their node names).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from collections.abc import Callable

import numpy as np

from fastdet_cli import interrupt


@dataclass(frozen=True)
class Site:
    """A quantized convolution of the QDQ graph."""

    conv: str  # ONNX node name
    activation: str | None  # float tensor in front of the input's Q/DQ pair
    weight: str | None  # float weight constant in front of the weight's Q/DQ pair (the Paddle parameter name)
    output: str | None = None  # the convolution's own output, when a Q/DQ pair follows it
    output_dq: str | None = None  # what the consumers read: the DequantizeLinear after that pair


def conv_sites(model) -> list[Site]:
    """The convolutions whose input or weight goes through a QuantizeLinear → DequantizeLinear pair."""
    from fastdet_cli.export.qdq import _consumers

    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model.graph)

    def output_pair(name: str) -> str | None:
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            return None
        dqs = consumers.get(users[0].output[0], [])
        return dqs[0].output[0] if len(dqs) == 1 and dqs[0].op_type == "DequantizeLinear" else None

    def float_source(name: str) -> str | None:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None

    sites = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            out_dq = output_pair(node.output[0])
            site = Site(node.name, float_source(node.input[0]), float_source(node.input[1]),
                        node.output[0] if out_dq else None, out_dq)
            if site.activation or site.weight:
                sites.append(site)
    return sites


def with_float(model, sites: list[Site]):
    """A copy of `model` in which the convolutions of `sites` read their float input and weight, and (where a
    Q/DQ pair follows them) the pair's DequantizeLinear becomes an Identity of the float output, so that
    every reader, graph outputs included, sees the float value under the same name."""
    out = copy.deepcopy(model)
    chosen = {s.conv: s for s in sites}
    to_float = {s.output_dq: s.output for s in sites if s.output_dq}
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in to_float:
            node.op_type = "Identity"
            node.input[:] = [to_float[node.output[0]]]
            del node.attribute[:]
            continue
        site = chosen.get(node.name)
        if site is None or node.op_type != "Conv":
            continue
        if site.activation:
            node.input[0] = site.activation
        if site.weight:
            node.input[1] = site.weight
    return out


RANKING_FEEDS = 8  # calibration images the ranking measures output error on (16 picked the same layers, 2× slower)


def deployable(model, sites: list[Site]):
    """`model` with `sites` in float, as it is deployed: weights behind a QuantizeLinear (the probe's form, which
    `with_float` rewires) folded to int8 initializers and the pairs left unused removed. ORT fuses a convolution
    into QLinearConv only when its weight's DequantizeLinear reads an initializer: timing the unfolded probe
    measured float convolutions with Q/DQ around them, never the model written."""
    from fastdet_cli.export.qdq import fold_weight_quantize, prune_dead_nodes

    out = with_float(model, sites)
    fold_weight_quantize(out)
    prune_dead_nodes(out)
    return out


def ranking_feeds(samples) -> list[dict]:
    """The first RANKING_FEEDS calibration samples as batch-1 feeds."""
    return [{k: v[None] for k, v in samples[i].items()} for i in range(min(RANKING_FEEDS, len(samples)))]


def session(model, threads: int | None = None):
    """An ONNX Runtime runner on the in-memory `model` (basic graph optimizations: builds faster; every core
    unless `threads` says otherwise: the search's accuracy runs are not timings); use with `with`."""
    import os

    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import BACKENDS, create_runner

    opts = RunnerOptions(threads=threads or os.cpu_count() or 1, graph_optimization="basic")
    return create_runner(BACKENDS["ort"], model.SerializeToString(), opts)


@dataclass
class OutputProbe:
    """Raw outputs of the FP32 model on a few feeds; `error(model)` is the mean over feeds and outputs of
    ||y - y_fp32||² / ||y_fp32||² (normalized squared error)."""

    fp32_model: object
    feeds: list[dict[str, np.ndarray]]
    reference: list[list[np.ndarray]] = field(init=False)

    def __post_init__(self) -> None:
        with session(self.fp32_model) as runner:
            self.reference = [runner.infer(f) for f in self.feeds]

    def error(self, model) -> float:
        total, n_out = 0.0, 1
        with session(model) as runner:
            for feed, ref in zip(self.feeds, self.reference):
                outs = runner.infer(feed)
                n_out = len(outs)
                for y, r in zip(outs, ref):
                    total += float(np.sum((y - r) ** 2) / max(np.sum(r ** 2), 1e-12))
        return total / (len(self.feeds) * n_out)


def rank_sites(int8_model, probe: OutputProbe, progress: Callable[[int, int], None] | None = None
               ) -> list[tuple[Site, float]]:
    """Sites sorted by isolated damage: the output error with only that convolution quantized."""
    sites = conv_sites(int8_model)
    ranked = []
    for i, site in enumerate(sites):
        interrupt.check()
        others = [s for s in sites if s is not site]
        ranked.append((site, probe.error(with_float(int8_model, others))))
        if progress:
            progress(i + 1, len(sites))
    return sorted(ranked, key=lambda t: -t[1])
