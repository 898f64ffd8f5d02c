"""Which quantized convolutions cost the accuracy: a per-layer sensitivity search on the INT8 ONNX export.

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
from pathlib import Path

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
    from fastdet_cli.runtime.registry import create_runner

    opts = RunnerOptions(threads=threads or os.cpu_count() or 1, graph_optimization="basic")
    return create_runner("ort", model.SerializeToString(), opts)


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


@dataclass
class Step:
    """One measured model of the search: `float_layers` of the ranking kept in float."""

    float_layers: int
    map: float
    runtime_ms: float | None  # median runtime on the search's backend (None: not measured)
    fp32_ms: float | None = None  # the FP32 model's median, timed alternately with this one (interleaved_ms)

    @property
    def speedup(self) -> float | None:
        return self.fp32_ms / self.runtime_ms if self.runtime_ms and self.fp32_ms else None

    @property
    def faster(self) -> bool:
        return self.runtime_ms is not None and self.fp32_ms is not None and self.runtime_ms < self.fp32_ms


@dataclass
class SearchResult:
    """What the search measured: mAP of FP32 and full INT8, then of INT8 with the top-k layers in float, and the
    runtime of each (the cost of the layers kept float, measured on the backend the model is made for)."""

    dataset: str
    fp32_map: float
    int8_map: float
    max_drop: float
    fp32_ms: float | None = None
    fp32_graph: str = ""  # the FP32 graph timed against (artifacts.best_fp32): "as given" or its rewrite
    ranking: list[tuple[Site, float]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    chosen: list[Site] = field(default_factory=list)
    met: bool = True
    stopped: str = ""  # why the search ended where it did
    chosen_step: Step | None = None  # the measured model that was written
    returned: list[str] = field(default_factory=list)  # layers put back in INT8 after the budget was met

    @property
    def best(self) -> Step:
        return self.chosen_step or self.steps[0]

    def as_dict(self) -> dict:
        best = self.best
        return {"dataset": self.dataset, "fp32_map": round(self.fp32_map, 4), "int8_map": round(self.int8_map, 4),
                "max_drop_points": round(100 * self.max_drop, 3), "met": self.met, "stopped": self.stopped,
                "chosen_map": round(best.map, 4), "chosen_drop_points": round(100 * (self.fp32_map - best.map), 2),
                "fp32_runtime_ms": self.fp32_ms, "fp32_graph": self.fp32_graph or None,
                "chosen_runtime_ms": best.runtime_ms,
                "chosen_fp32_runtime_ms": best.fp32_ms,
                "chosen_faster": best.faster if best.runtime_ms is not None else None,
                "ranking_top10": [{"conv": s.conv, "weight": s.weight, "activation": s.activation,
                                   "isolated_error": float(f"{e:.4g}")} for s, e in self.ranking[:10]],
                "steps": [{"float_layers": st.float_layers, "map": round(st.map, 4), "runtime_ms": st.runtime_ms,
                           "fp32_runtime_ms": st.fp32_ms} for st in self.steps],
                "returned_to_int8": self.returned,
                "kept_float": [s.weight or s.conv for s in self.chosen], "target_reached": self.met}


def evaluate_map(model, dataset, backend: str = "ort") -> float:
    """mAP@[.5:.95] of a model (ModelSource or fastdet ONNX model dir) on `backend`, on every core."""
    import os

    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.runtime.base import RunnerOptions

    with detector(model, backend, RunnerOptions(threads=os.cpu_count() or 1)) as det:
        return coco_evaluate(det, dataset).map


def interleaved_ms(model_path, fp32_path, backend: str, feed: dict[str, np.ndarray],
                   min_seconds: float = 1.0) -> tuple[float, float]:
    """(INT8, FP32) median runtimes in ms, one thread, of the ONNX models at `model_path` and `fp32_path` on
    `backend`, in the modes `fastdet bench` runs them in: what one step of the search costs in latency, on the
    runtime its output is made for, timed alternately (runtime.timing.alternate_ms). While this was built, two
    separate timings once made the search keep a model 16 mAP points worse: a candidate measured 3.183 ms against
    an FP32 model timed earlier at 3.181 ms was "no longer faster"."""
    from fastdet_cli.runtime.registry import create_runner, get_backend
    from fastdet_cli.runtime.timing import alternate_ms

    spec = get_backend(backend)
    with create_runner(spec, model_path, spec.mode_options("int8", 1)) as int8, \
            create_runner(spec, fp32_path, spec.mode_options("fp32", 1)) as fp32:
        int8_ms, fp32_ms = alternate_ms([(int8, feed), (fp32, feed)], min_seconds=min_seconds)
    return int8_ms, fp32_ms


MAX_RETURN_TRIALS = 64  # backward elimination: at most this many layers are tried back in INT8


def _sizes(n: int, limit: int | None) -> list[int]:
    """1, 2, 4, 8… up to min(n, limit) (the last one included)."""
    top = min(n, limit) if limit else n
    out, k = [], 1
    while k < top:
        out.append(k)
        k *= 2
    return out + [top] if top else out


def search_float_layers(fp32, int8_dir, work_dir, dataset, feeds: list[dict[str, np.ndarray]],
                        max_drop: float, max_layers: int | None = None, log=print,
                        runtime_backend: str | None = "ort") -> SearchResult:
    """Keep the fewest convolutions in float that bring the INT8 mAP drop on `dataset` within `max_drop`
    (mAP@[.5:.95] as a fraction), measuring each candidate as a whole (the cumulative effect of the layers kept
    float, not the sum of single-layer effects) and its runtime: layers are taken in the order of the isolated-
    damage ranking, 1, 2, 4, 8… at a time until the budget is met (then the fewest that meet it are found by
    bisection), the ranking runs out, or `max_layers` is reached. The fewest layers that meet the budget are chosen,
    else the most accurate model measured; `met` says whether it is within budget, and its runtime (timed
    alternately with FP32) whether it is faster — reported, not traded against the budget.

    `fp32` is the FP32 ONNX model (ModelSource), `int8_dir` a fastdet ONNX model dir (model.onnx + deploy config
    + fastdet.yml); `work_dir` receives a copy of the INT8 dir whose model.onnx is replaced by each variant.
    `runtime_backend`: where the runtime is measured (the backend the output is made for; None: not measured)."""
    import shutil

    import onnx

    from fastdet_cli.det.model import resolve_model

    measure_runtime = runtime_backend is not None
    # accuracy on the runtime the output is made for (else ORT, which runs any Q/DQ graph): ORT's float simulation
    # of OpenVINO's form scored 0.995 agreement where OpenVINO's INT8 kernels gave 0.980 (real-weight PicoDet, calib
    # pages, 2026-12-06) — a budget "met" on ORT was missed where the model runs
    judge = runtime_backend or "ort"

    fp32_model = onnx.load(str(fp32.path))
    int8_model = onnx.load(str(resolve_model(int8_dir).path))
    # every model measured is the deployable graph written to a copy of the INT8 dir (deployable: weights folded)
    shutil.rmtree(work_dir, ignore_errors=True)
    shutil.copytree(int8_dir, work_dir)
    variant_path = resolve_model(work_dir).path
    onnx.save(deployable(int8_model, []), str(variant_path))
    fp32_map, int8_map = evaluate_map(fp32, dataset, judge), evaluate_map(work_dir, dataset, judge)
    result = SearchResult(dataset.label, fp32_map, int8_map, max_drop)
    feed = feeds[0]

    # INT8 is timed against the best FP32 graph fastdet makes for that runtime (as bench's FP32 row)
    fp32_timed = None
    if measure_runtime:
        from fastdet_cli.artifacts import best_fp32

        form = best_fp32(fp32, runtime_backend, 1)
        fp32_timed, result.fp32_graph = form.model.path, form.rewrite or "as given"

    def timed(path) -> tuple[float | None, float | None]:
        if not measure_runtime:
            return None, None
        int8_ms, fp32_ms = interleaved_ms(path, fp32_timed, runtime_backend, feed)
        if int8_ms >= fp32_ms:  # "not faster" is reported and warned of: confirmed by a second, 3× longer timing
            int8_ms, fp32_ms = interleaved_ms(path, fp32_timed, runtime_backend, feed, min_seconds=3.0)
        return int8_ms, fp32_ms

    first, result.fp32_ms = timed(variant_path)
    result.steps.append(Step(0, int8_map, first, result.fp32_ms))
    log(f"search on {Path(dataset.label).name}: mAP FP32 {fp32_map:.4f}, INT8 {int8_map:.4f} "
        f"(drop {100 * (fp32_map - int8_map):.2f} points, budget {100 * max_drop:.2f})"
        + (f"; runtime on {runtime_backend} FP32 ({result.fp32_graph}) {result.fp32_ms:.1f} ms, INT8 "
           f"{result.steps[0].runtime_ms:.1f} ms"
           if measure_runtime else ""))
    result.chosen_step = result.steps[0]
    if fp32_map - int8_map <= max_drop:
        result.stopped = "INT8 within budget as quantized"
        shutil.rmtree(work_dir, ignore_errors=True)
        return result
    if measure_runtime and not result.steps[0].faster:
        log(f"  INT8 as quantized is not faster than FP32 on {runtime_backend} here ({result.steps[0].speedup:.2f}×, "
            "timed alternately): float layers will not make it faster; the search still finds the budget")
    probe = OutputProbe(fp32_model, feeds)

    def ranked(i: int, n: int) -> None:
        if i % 20 == 0 or i == n:
            log(f"  ranking convolutions by isolated damage: {i}/{n}")

    result.ranking = rank_sites(int8_model, probe, ranked)
    log("most sensitive convolutions (output error with only that layer quantized): " +
        ", ".join(f"{s.weight or s.conv} {e:.3g}" for s, e in result.ranking[:5]))

    def measure(sites: list[Site], record: bool = True, known_map: float | None = None) -> Step:
        """The INT8 model with `sites` in float: its mAP (unless known) and, when recorded, its runtime."""
        interrupt.check()
        onnx.save(deployable(int8_model, sites), str(variant_path))
        step = Step(len(sites), evaluate_map(work_dir, dataset, judge) if known_map is None else known_map,
                    *(timed(variant_path) if record else (None, None)))
        if record:
            result.steps.append(step)
            log(f"  {step.float_layers} layer(s) in float: mAP {step.map:.4f} "
                f"(drop {100 * (fp32_map - step.map):.2f} points)"
                + (f", runtime {step.runtime_ms:.2f} ms ({step.speedup:.2f}× FP32 timed beside it)"
                   if measure_runtime else ""))
        return step

    def prefix(k: int) -> list[Site]:
        return [s for s, _ in result.ranking[:k]]

    def within(m: float) -> bool:
        return fp32_map - m <= max_drop

    # the budget is the constraint and speed the report: a search that stopped where a candidate first timed
    # "no longer faster" wrote models 16 mAP points off the budget on a loaded machine (the embedded model on
    # ORT, issue 28), where the next candidate met it at 1.06× FP32
    lo = 0  # the largest k measured that misses the budget
    result.stopped = "every ranked layer tried"
    for k in _sizes(len(result.ranking), max_layers):
        step = measure(prefix(k))
        if within(step.map):
            while k - lo > 1:  # the fewest layers that still meet the budget
                mid = (lo + k) // 2
                if within(measure(prefix(mid)).map):
                    k = mid
                else:
                    lo = mid
            result.stopped = f"budget met with {k} layer(s) in float"
            break
        lo = k
    else:
        if max_layers and max_layers < len(result.ranking):
            result.stopped = f"PTQ.max_float_layers ({max_layers}) reached"
    meeting = [s for s in result.steps if within(s.map)]
    best = min(meeting, key=lambda s: s.float_layers) if meeting else max(result.steps, key=lambda s: s.map)
    result.met = bool(meeting)
    result.chosen, result.chosen_step = prefix(best.float_layers), best
    if result.met and len(result.chosen) > 1:
        # backward elimination: the ranking orders layers by their damage alone, so the prefix that meets the
        # budget holds layers the others made unnecessary; each, least damaging first, goes back to INT8 and stays
        # there if the whole model still meets the budget
        chosen, returned, kept_map = list(result.chosen), [], None
        log(f"  trying to put the {len(chosen)} float layers back in INT8, one at a time (budget kept)")
        tries = list(reversed(chosen))[:MAX_RETURN_TRIALS]
        for i, site in enumerate(tries, 1):
            if i % 8 == 0:
                log(f"    {i}/{len(tries)} tried, {len(returned)} back in INT8")
            trial = [s for s in chosen if s is not site]
            m = measure(trial, record=False).map
            if within(m):
                chosen, kept_map = trial, m
                returned.append(site.weight or site.conv)
        if returned:
            step = measure(chosen, known_map=kept_map)  # runtime of the result, recorded as the last step
            result.chosen, result.chosen_step, result.returned = chosen, step, returned
            result.stopped += f"; {len(returned)} of those layers then put back in INT8 within budget"
    chosen_step = result.chosen_step
    if measure_runtime and not chosen_step.faster:
        result.stopped += (f"; the model written is not faster than FP32 on {runtime_backend} "
                           f"({chosen_step.speedup:.2f}×, timed alternately)")
        log(f"warning: INT8 {'within the budget' if result.met else 'as chosen'} is not faster than FP32 on "
            f"{runtime_backend} here ({chosen_step.speedup:.2f}× FP32, timed alternately)")
    shutil.rmtree(work_dir, ignore_errors=True)
    return result

