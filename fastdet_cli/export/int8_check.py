"""Is an INT8 ONNX export the quantized Paddle program it came from? Checked in two parts, because the two
runtimes round differently and the calibrated program itself differs a little from one CPU kind to another,
while a real export error can move the outputs by no more than that (dropping every Q/DQ pair of the embedded
model moves its scores by 0.02 at the median; the rounding noise between ONNX Runtime and Paddle is 0.01):

1. **Structure** (exact, the same on every CPU): every convolution whose weights the program stores quantized
   reads its weights, and its input where the program quantizes it, through QuantizeLinear → DequantizeLinear
   pairs in the ONNX graph, at the program's step (Paddle's abs-max scale ÷ (2^(bits−1) − 1), relative 1e-5),
   with the Q and DQ of each pair at the same scale and zero point, and no int32 bias quantized with scale 0
   (paddle2onnx loses the bias of a channel whose weights are all zero). This catches dropped pairs and wrong
   scales.
2. **Numbers**: the raw outputs before NMS (boxes and class scores per anchor) of both on a few generated
   scenes, on the anchors that matter (a class score ≥ 0.1 in either; the 100 best-scored where none reaches
   it): median and 90th-percentile score change,
   and the median IoU of each anchor's two boxes. Tolerances: about four times the rounding noise measured on an
   AMX Xeon (score median 0.010, p90 0.024, box IoU median 0.98; docs/toolchain.md), or three times the
   program's own rounding spread where that is larger — the program against itself with every scale moved by up
   to ±0.1%, which rounds the values near a step boundary the other way, as another runtime does (0.011 median on
   the embedded model; a chaotic random-weight network gets a note that its numbers cannot check anything).
   Broken exports give score medians ≥ 0.05 and IoU medians ≤ 0.9 for scales off by 2×. This catches swapped or
   mis-wired outputs and anything the structure check cannot see. Outputs that are not a box/score pair (raw
   heads: score maps and DFL logits) are compared as |Δ| ÷ the program's 99th-percentile magnitude at the 90th
   percentile, within OTHER_P90_MAX or three times the program's own rounding spread of that figure. A greedy
   match of NMS outputs is not used: one near-tie in a cluster of boxes pairs two different boxes (a 0.155
   "score difference" on a correct export).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastdet_cli.onnx_graph import constant_values, cut_nms

RELEVANT_SCORE = 0.1  # an anchor matters when a class score reaches this in either model
FALLBACK_ANCHORS = 100  # where none does: this many best-scored anchors (the check is never empty)
SCORE_MEDIAN_MAX = 0.04  # floors; a model more sensitive to rounding gets SPREAD_FACTOR × its own spread
SCORE_P90_MAX = 0.10
BOX_IOU_MEDIAN_MIN = 0.90
SCALE_PERTURBATION = 1e-3  # the program's scales moved by up to ±0.1%: its rounding spread (see module doc)
SPREAD_FACTOR = 3.0
CHAOTIC_SPREAD = 0.05  # a rounding spread above this (5× a trained detector's) gets a note: numbers check little
OTHER_P90_MAX = 0.04  # outputs that are not boxes/scores: |Δ| ÷ the reference's 99th-percentile magnitude
SCALE_RTOL = 1e-5
SEEDS = (0, 1, 2)



@dataclass
class Int8Check:
    """What the check found: problems (empty when the export is right) and the figures it measured."""

    problems: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)  # the program against itself with perturbed scales
    tolerances: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---- 1. structure -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pair:
    """A QuantizeLinear → DequantizeLinear pair: each one's scale and zero point."""

    q_scale: np.ndarray
    dq_scale: np.ndarray
    q_zero: np.ndarray | None
    dq_zero: np.ndarray | None


def onnx_conv_quantization(graph) -> dict[str, tuple[_Pair | None, _Pair | None]]:
    """Weight name → (its Q/DQ pair or None, the input's Q/DQ pair or None) for every Conv of an ONNX graph whose
    weight is a named constant (possibly behind a Q/DQ pair)."""
    vals = constant_values(graph)
    made_by = {o: n for n in graph.node for o in n.output}

    def pair(tensor: str) -> tuple[str, _Pair | None]:
        dq = made_by.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return tensor, None
        q = made_by.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            return dq.input[0], None  # a stored integer tensor: not what paddle2onnx writes
        def zero(n):
            return vals.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        return q.input[0], _Pair(np.asarray(vals.get(q.input[1], np.nan), np.float64).reshape(-1),
                                 np.asarray(vals.get(dq.input[1], np.nan), np.float64).reshape(-1), zero(q), zero(dq))

    out = {}
    for n in graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        weight, w_pair = pair(n.input[1])
        if weight in vals:
            out[weight] = (w_pair, pair(n.input[0])[1])
    return out


def lost_biases(graph) -> list[str]:
    """Convolutions whose int32-quantized bias has scale 0 in some channel: paddle2onnx quantizes a bias with
    (input scale × weight scale), which is 0 where a channel's weights are all zero (PP-YOLOE's classification
    convolutions at initialisation), so the bias becomes 0 × (−2^31): lost. Names the weights."""
    vals = constant_values(graph)
    made_by = {o: n for n in graph.node for o in n.output}
    out = []
    for n in graph.node:
        dq = made_by.get(n.input[2]) if n.op_type == "Conv" and len(n.input) > 2 else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[1] in vals:
            zero = int(np.sum(np.asarray(vals[dq.input[1]]) == 0))
            if zero:
                w = made_by.get(n.input[1])
                q = made_by.get(w.input[0]) if w is not None and w.op_type == "DequantizeLinear" else None
                out.append(f"{q.input[0] if q is not None else n.name} ({zero} channels)")
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=SCALE_RTOL, atol=0))


def _pair_problem(what: str, p: _Pair, expected: np.ndarray) -> str | None:
    if not (_same(p.q_scale, p.dq_scale) and (p.q_zero is None) == (p.dq_zero is None)
            and (p.q_zero is None or np.array_equal(p.q_zero, p.dq_zero))):
        return f"{what}: its QuantizeLinear and DequantizeLinear disagree (scale or zero point)"
    if expected.size == 1:  # a per-tensor scale written per channel, or the other way round
        expected = np.broadcast_to(expected, p.q_scale.shape)
    if not _same(p.q_scale, expected):
        ratio = float(np.median(p.q_scale / np.maximum(expected, 1e-30))) if expected.shape == p.q_scale.shape \
            else float("nan")
        return f"{what}: scale is {ratio:.3g}× the quantized program's"
    return None


def structure_problems(program: dict, graph: dict[str, tuple[_Pair | None, _Pair | None]]) -> list[str]:
    """Compare paddle_quant.quantized_convs (the program) with onnx_conv_quantization (the export)."""
    problems = []
    for weight, qc in program.items():
        if weight not in graph:
            problems.append(f"no ONNX convolution reads the weights {weight}")
            continue
        w_pair, x_pair = graph[weight]
        if w_pair is None:
            problems.append(f"convolution {weight}: weights are float in the ONNX graph (Q/DQ pair missing)")
        elif (msg := _pair_problem(f"convolution {weight} weights", w_pair, qc.weight_scale)):
            problems.append(msg)
        if qc.input_scale is not None:
            if x_pair is None:
                problems.append(f"convolution {weight}: input is float in the ONNX graph (Q/DQ pair missing)")
            elif (msg := _pair_problem(f"convolution {weight} input", x_pair, np.array([qc.input_scale]))):
                problems.append(msg)
    return problems


# ---- 2. numbers ---------------------------------------------------------------------------------------------
def _anchor_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[i] with b[i] for boxes [N, 4] (x1, y1, x2, y2)."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _boxes_scores(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """(boxes [M, 4], scores [C, M]) of one image when the outputs are a box/score pair before NMS."""
    if len(outputs) != 2:
        return None
    for b, s in (outputs, outputs[::-1]):
        if b.ndim == 3 and b.shape[-1] == 4 and s.ndim == 3 and s.shape[-1] == b.shape[1]:
            return b[0].astype(np.float64), s[0].astype(np.float64)
    return None


def tolerances(spread: dict[str, float] | None = None) -> dict[str, float]:
    """The limits for output_agreement: the floors, or SPREAD_FACTOR × the program's own rounding spread (its
    outputs against the same program with scales perturbed by ±0.1%) where that is larger."""
    tol = {"score median": SCORE_MEDIAN_MAX, "score p90": SCORE_P90_MAX, "box IoU median": BOX_IOU_MEDIAN_MIN}
    if spread:
        tol["score median"] = max(tol["score median"], SPREAD_FACTOR * spread.get("score median", 0.0))
        tol["score p90"] = max(tol["score p90"], SPREAD_FACTOR * spread.get("score p90", 0.0))
        tol["box IoU median"] = min(tol["box IoU median"],
                                    1.0 - SPREAD_FACTOR * (1.0 - spread.get("box IoU median", 1.0)))
        for key, value in spread.items():  # outputs that are not a box/score pair (raw heads)
            if key.endswith(" relative p90"):
                tol[key] = max(OTHER_P90_MAX, SPREAD_FACTOR * value)
    return tol


def output_agreement(ref_runs: list[list[np.ndarray]], out_runs: list[list[np.ndarray]],
                     spread: dict[str, float] | None = None) -> Int8Check:
    """Held to `tolerances(spread)`: per image, the reference's outputs and the export's."""
    check = Int8Check()
    tol = tolerances(spread)
    runs = [paired_outputs(r, o) for r, o in zip(ref_runs, out_runs)]
    if not all(runs):
        bad = next(k for k, run in enumerate(runs) if not run)
        check.problems.append(f"outputs {[o.shape for o in out_runs[bad]]} where the program gives "
                              f"{[r.shape for r in ref_runs[bad]]}")
        return check
    if "boxes" in runs[0]:
        d_score, iou = [], []
        for run in runs:
            (ob, rb), (os_, rs) = run["boxes"], run["scores"]  # one image: boxes [M, 4], scores [C, M]
            top = np.maximum(rs.max(0), os_.max(0))
            relevant = top >= RELEVANT_SCORE
            if not relevant.any():  # no anchor scores that high (an untrained model): its best-scored anchors
                relevant = np.zeros_like(relevant)
                relevant[np.argsort(-top)[:FALLBACK_ANCHORS]] = True
            d_score.append(np.abs(rs - os_)[:, relevant].max(0) if relevant.any() else np.zeros(0))
            iou.append(_anchor_iou(rb[relevant], ob[relevant]))
        d, u = np.concatenate(d_score), np.concatenate(iou)
        f = check.figures
        f["anchors compared"] = float(len(d))
        if len(d):
            f["score median"], f["score p90"] = float(np.median(d)), float(np.percentile(d, 90))
            f["score max"], f["box IoU median"] = float(d.max()), float(np.median(u))
            if f["score median"] > tol["score median"] or f["score p90"] > tol["score p90"]:
                check.problems.append(f"class scores differ by {f['score median']:.3f} at the median, "
                                      f"{f['score p90']:.3f} at the 90th percentile over {len(d)} anchors (tolerance "
                                      f"{tol['score median']:.3g} / {tol['score p90']:.3g})")
            if f["box IoU median"] < tol["box IoU median"]:
                check.problems.append(f"each anchor's two boxes overlap with IoU {f['box IoU median']:.2f} at the "
                                      f"median (tolerance ≥ {tol['box IoU median']:.3g})")
        return check
    for name in runs[0]:
        o = np.concatenate([run[name][0].reshape(-1) for run in runs]).astype(np.float64)
        r = np.concatenate([run[name][1].reshape(-1) for run in runs]).astype(np.float64)
        err = np.abs(r - o) / (np.percentile(np.abs(r), 99) + 1e-6)
        p90 = float(np.percentile(err, 90)) if err.size else 0.0
        check.figures[f"{name} relative p90"] = p90
        limit = tol.get(f"{name} relative p90", OTHER_P90_MAX)
        if p90 > limit:
            check.problems.append(f"{name} differs by {p90:.3f} of its range at the 90th percentile "
                                  f"(tolerance {limit:.3g})")
    return check


@contextmanager
def program_before_nms(model_dir: Path) -> Iterator[Path]:
    """A copy of the program in `model_dir` cut before its multiclass NMS op (whole, when it has none), in a
    temporary folder that lasts the block."""
    import os
    import shutil
    import tempfile

    from fastdet_cli.outputs import library_output_to
    from fastdet_cli.paddle_program import save_without_nms

    with tempfile.TemporaryDirectory(prefix="fastdet-program-") as tmp:
        path = Path(tmp) / "program"
        with library_output_to(Path(os.devnull)):  # Paddle's executor logs through glog
            if not save_without_nms(model_dir, path):
                shutil.copytree(model_dir, path)
        yield path


def runs_on(backend: str, model: Path, feeds: list[dict], options=None) -> list[list[np.ndarray]]:
    """Each feed through `model` on `backend`, 1 thread; Paddle by default without oneDNN, which computes a
    quantized program's Q/DQ in float (the reference every INT8 runtime is held to)."""
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    options = options or RunnerOptions(threads=1, mkldnn=False)
    with create_runner(backend, model, options) as runner:
        return [runner.infer({k: f[k] for k in runner.input_metadata()}) for f in feeds]


def rounding_spread(program: Path, feeds: list[dict], reference: list) -> dict[str, float]:
    """How much `program` (a copy: its scales are changed in place) moves against its own `reference` outputs when
    every scale moves by up to ±SCALE_PERTURBATION: output_agreement's figures."""
    import os

    from fastdet_cli.outputs import library_output_to
    from fastdet_cli.paddle_quant import perturb_quant_scales

    with library_output_to(Path(os.devnull)):
        perturb_quant_scales(program, SCALE_PERTURBATION)
    return output_agreement(reference, runs_on("paddle", program, feeds)).figures


def raw_outputs(model_dir: Path, onnx_path: Path, deploy, seeds=SEEDS, perturbed: bool = False) -> tuple:
    """(Paddle's outputs, ONNX Runtime's[, the program's rounding spread]) per generated scene, all before NMS:
    the program cut before its multiclass NMS op and the ONNX graph cut before NonMaxSuppression, when either
    holds one."""
    import tempfile

    from fastdet_cli.data.synth import sample_inputs

    feeds = [sample_inputs(deploy, seed) for seed in seeds]
    with program_before_nms(model_dir) as program, tempfile.TemporaryDirectory(prefix="fastdet-onnx-") as tmp:
        onnx_raw = Path(tmp) / "raw.onnx"
        if cut_nms(onnx_path, onnx_raw) is None:
            onnx_raw = onnx_path
        reference = runs_on("paddle", program, feeds)
        out = (reference, runs_on("ort", onnx_raw, feeds))
        if perturbed:
            out += (rounding_spread(program, feeds, reference),)
    return out


def paired_outputs(ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name → (export's, reference's) output: "boxes"/"scores" when both are a box/score pair (told apart by
    shape, as the detector does), else "output K" by position. Empty when the shapes do not line up."""
    r, o = _boxes_scores(ref), _boxes_scores(out)
    if r is not None and o is not None and r[0].shape == o[0].shape and r[1].shape == o[1].shape:
        return {"boxes": (o[0], r[0]), "scores": (o[1], r[1])}
    if len(ref) != len(out) or any(a.shape != b.shape for a, b in zip(ref, out)):
        return {}
    return {f"output {k}": (b, a) for k, (a, b) in enumerate(zip(ref, out))}


def check_int8_export(model_dir: Path, onnx_path: Path, deploy) -> Int8Check:
    """Both parts against the quantized Paddle program in `model_dir`. The ONNX graph may hold the NMS or not:
    the comparison is made before it either way."""
    import os

    import onnx

    from fastdet_cli.outputs import library_output_to
    from fastdet_cli.paddle_quant import quantized_convs

    with library_output_to(Path(os.devnull)):  # Paddle's executor logs through glog
        program = quantized_convs(model_dir)
    graph = onnx.load(str(onnx_path)).graph
    check = Int8Check(problems=structure_problems(program, onnx_conv_quantization(graph)))
    lost = lost_biases(graph)
    if lost:
        check.problems.append(f"{len(lost)} convolution bias(es) quantized with scale 0 and lost, where a channel's "
                              f"weights are all zero (paddle2onnx): {', '.join(lost[:3])}")
    check.figures["quantized convolutions"] = float(len(program))
    ref_runs, out_runs, spread = raw_outputs(model_dir, onnx_path, deploy, perturbed=True)
    numbers = output_agreement(ref_runs, out_runs, spread)
    check.problems += numbers.problems
    check.figures.update(numbers.figures)
    check.spread = {k: v for k, v in spread.items()
                    if k in ("score median", "score p90", "box IoU median") or k.endswith(" relative p90")}
    check.tolerances = tolerances(check.spread)
    if check.spread.get("score median", 0.0) > CHAOTIC_SPREAD:
        check.notes.append(
            f"this model is very sensitive to rounding: its scales moved by ±{100 * SCALE_PERTURBATION:g}% change its "
            f"scores by {check.spread['score median']:.3f} at the median (a trained detector: ~0.01), so the outputs "
            "cannot tell a right export from a wrong one; the structure check (scales, Q/DQ placement) is what holds "
            "this export")
    return check
