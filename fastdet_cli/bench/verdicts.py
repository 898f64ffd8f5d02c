"""What a bench run concludes: per-class AP deltas INT8 − FP32, why INT8 is not faster where it is not (a short
`fastdet inspect` profile), and the recommendation — the fastest backend × precision whose mAP is within
`max_map_drop` points of FP32 on the same backend."""
from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Callable

from fastdet_cli.runtime.registry import AS_GIVEN, FP32_MODEL_MODES

from fastdet_cli.bench.report import DiffTarget, Recommendation

if TYPE_CHECKING:
    from fastdet_cli.bench.rows import Row

FLAG_POINTS = 5.0  # a class losing more than this many AP points under INT8 is flagged
AS_FAST = 1.05  # a BF16 row within 5% of the fastest INT8 row is preferred to it (no calibration, FP32 accuracy)


def per_class_deltas(rows: list[Row]) -> dict:
    """Per backend: INT8 − FP32 AP per class (points), and the classes that lost more than FLAG_POINTS."""
    out = {}
    by = {(r.backend, r.precision): r for r in rows}
    for (backend, prec), r in by.items():
        base = by.get((backend, "fp32"))
        if prec != "int8" or not base or not r.per_class_ap or not base.per_class_ap:
            continue
        delta = {c: round(100 * (r.per_class_ap[c] - base.per_class_ap[c]), 2) for c in base.per_class_ap}
        out[backend] = {"delta_points": delta, "flagged": [c for c, d in delta.items() if d < -FLAG_POINTS]}
    return out


def set_speedups(rows: list[Row]) -> None:
    """Each row that ran a mode other than FP32 gets its speedup over the same backend's FP32 row, runtime and
    end-to-end (FP32 mean ÷ its mean; None where either was not measured): computed here only, saved in
    report.json, read by the tables and the recommendation. The FP32 row is the best FP32 graph fastdet made
    (artifacts.best_fp32); the graph as given (its own row where it differs) is no baseline."""
    fp32 = {r.backend: r for r in rows if r.precision == "fp32" and r.ok}
    for r in rows:
        base = fp32.get(r.backend)
        if r.precision in ("fp32", AS_GIVEN) or not r.ok or base is None:
            continue
        r.speedup = {k: round(getattr(base, f"{k}_ms")["mean"] / getattr(r, f"{k}_ms")["mean"], 4)
                     if getattr(base, f"{k}_ms") and getattr(r, f"{k}_ms") else None
                     for k in ("runtime", "end2end")}


def recommend(rows: list[Row], max_map_drop: float) -> Recommendation:
    """The fastest backend × precision whose mAP is within `max_map_drop` points of FP32 on the same backend
    (end-to-end mean when measured, else runtime mean); BF16 is weighed like INT8, and preferred to an INT8 row
    that is not more than 5% faster. INT8/BF16 rows without mAP cannot qualify unless no row has mAP at all
    (then speed alone decides, and the text says so). Needs the rows' speedups (set_speedups)."""
    key = "end2end_ms" if any(r.end2end_ms for r in rows) else "runtime_ms"
    ok = [r for r in rows if r.ok and getattr(r, key) and r.precision != AS_GIVEN]
    if not ok:
        return Recommendation("no backend ran")
    fp32 = {r.backend: r for r in ok if r.precision == "fp32"}
    with_map = any(r.map is not None for r in ok)

    def mean(r: Row) -> float:
        return getattr(r, key)["mean"]

    def qualifies(r: Row) -> bool:
        if r.precision == "fp32" or not with_map:
            return True
        base = fp32.get(r.backend)
        return r.map is not None and base is not None and base.map is not None and \
            100 * (base.map - r.map) <= max_map_drop

    candidates = [r for r in ok if qualifies(r)]
    best = min(candidates, key=mean)
    # BF16 needs no calibration and keeps FP32's accuracy but for rounding: where it is as fast as the best
    # INT8 row (within AS_FAST), it is the better deployment
    bf16 = [r for r in candidates if r.precision == "bf16" and mean(r) <= AS_FAST * mean(best)]
    preferred = ""
    if best.precision not in FP32_MODEL_MODES and bf16:
        quickest_int8 = best
        best = min(bf16, key=mean)
        preferred = (f"; preferred to {quickest_int8.precision.upper()} on {quickest_int8.backend} "
                     f"({mean(quickest_int8):.2f} ms), which is not more than {100 * (AS_FAST - 1):.0f}% "
                     "faster: BF16 needs no calibration")
    what = "end-to-end" if key == "end2end_ms" else "runtime"
    base = fp32.get(best.backend)
    if best.precision == "fp32" and all(r.precision == "fp32" for r in ok):
        text = f"FP32 on {best.backend} ({mean(best):.2f} ms {what}): the fastest backend; no INT8 or BF16 row ran"
    elif best.precision == "fp32":
        text = (f"FP32 on {best.backend} ({mean(best):.2f} ms {what}): INT8 does not pay here"
                + (f" (no INT8 or BF16 row both faster and within {max_map_drop:g} mAP point)" if with_map else ""))
    else:
        ratio = (best.speedup or {}).get("end2end" if key == "end2end_ms" else "runtime")
        speed = f", {ratio:.2f}x its FP32" if ratio else ""
        acc = (f", mAP {best.map:.3f} vs FP32 {base.map:.3f}" if with_map and base and base.map is not None
               else " (mAP not measured: speed only)")
        made = ("the FP32 model with bf16 arithmetic" if best.precision == "bf16" else
                f"{best.int8_artifact['method']}, {best.int8_artifact['path']}")
        text = f"{best.precision.upper()} on {best.backend} ({mean(best):.2f} ms {what}{speed}{acc}; {made}){preferred}"
    return Recommendation(text, best.backend, best.precision, what, max_map_drop)


def int8_verdicts(rows: list[Row], threads: int, log: Callable[[str], None]) -> dict[str, list[str]]:
    """For each backend where INT8 ran no faster than FP32 (its saved runtime speedup ≤ 1, set_speedups): the
    two models timed again alternately (the table's rows are timed one after the other, and on a small model a
    load on the other core moves them more than the difference), then `fastdet inspect`'s verdict (a short
    profile of 10 runs) on why, when the backend has a per-op profile."""
    from fastdet_cli.inspection import inspect_model

    fp32 = {r.backend: r for r in rows if r.precision == "fp32" and r.ok and r.model}
    out = {}
    for r in rows:
        if r.precision != "int8" or not r.ok or not r.runtime_ms or (r.speedup or {}).get("runtime", 0.0) > 1.0:
            continue
        spec = r.spec
        lines = []
        if r.backend in fp32 and not spec.gpu_only:
            log(f"INT8 is not faster than FP32 on {r.backend} in the table: timing both alternately")
            lines.append(alternate_check(fp32[r.backend], r, threads))
        if not spec.profiles_ops:
            lines.append(kernel_count_line(r) or f"no per-op profile: backend '{r.backend}' has none in fastdet")
        else:
            log(f"profiling INT8 on {r.backend} (fastdet inspect) to say why it is not faster")
            lines += inspect_model(r.int8_artifact["path"], spec, threads, runs=10).verdict()
        out[r.backend] = lines
    return out


def kernel_count_line(r: Row) -> str | None:
    """Where a backend has no per-op profile but named its convolution kernels with counts (Paddle's oneDNN
    verbose): how many convolutions ran in INT8, one line; None when nothing was counted."""
    counts = {k: n for k, n in ((r.kernels or {}).get("conv_isa") or {}).items() if n}
    if not counts:
        return None
    int8 = sum(n for k, n in counts.items() if "int8" in k.split())
    summary = " · ".join(f"{k} {n}" for k, n in counts.items())
    return (f"{int8} of {sum(counts.values())} convolutions ran in INT8 ({summary}, {r.kernels['source']}); the others "
            "ran in float with quantize/dequantize steps around the INT8 ones")


def alternate_check(fp32: Row, int8: Row, threads: int) -> str:
    """The FP32 and INT8 rows' models timed alternately, one run each (runtime.timing.alternate_ms): one line."""
    from fastdet_cli.artifacts import detector
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.runtime.timing import alternate_ms

    spec = int8.spec
    with detector(fp32.model, spec, spec.mode_options("fp32", threads)) as f, \
            detector(int8.int8_artifact["path"], spec, spec.mode_options("int8", threads)) as q:
        feeds = [{k: v for k, v in sample_inputs(d.source.deploy).items() if k in d.inputs} for d in (q, f)]
        int8_ms, fp32_ms = alternate_ms([(q.runner, feeds[0]), (f.runner, feeds[1])])
    text = f"timed again alternately with FP32: INT8 {int8_ms:.2f} ms, FP32 {fp32_ms:.2f} ms ({fp32_ms / int8_ms:.2f}×)"
    if int8_ms < fp32_ms:
        return text + ": INT8 is faster; the table's rows, timed one after the other, moved with the machine's load"
    return text + ": INT8 is not faster"


def diff_target(rows: list[Row], recommendation: Recommendation) -> DiffTarget | None:
    """{backend, int8_model} whose FP32 and INT8 rows were both evaluated, for the report's FP32-vs-INT8 images:
    the recommended backend when it is one, else the first such backend; None when no backend has both."""
    evaluated = {(r.backend, r.precision): r for r in rows if r.map is not None}
    both = [b for (b, p) in evaluated if p == "int8" and (b, "fp32") in evaluated and evaluated[(b, p)].int8_artifact]
    if not both:
        return None
    backend = recommendation.backend if recommendation.backend in both else both[0]
    return DiffTarget(backend, evaluated[(backend, "int8")].int8_artifact["path"])
