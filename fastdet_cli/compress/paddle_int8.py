"""Which ops Paddle Inference should run in oneDNN INT8 for a freshly quantized program, chosen by measuring.

Paddle 2.6.2's oneDNN INT8 passes can quantize convolutions only ('conv') or every op they know ('all',
Paddle's default). Neither is right for every model, measured on this project's two architectures:
PP-YOLOE-l 'all' ran 1.59× faster than FP32 and 'conv' ≈1.0×; on the embedded depthwise PicoDet 'all' was
slower (26.5 vs 19.5 ms) and *wrong* (mAP 0.027 vs 0.578: the scales Paddle propagates to the other ops do not
hold). So `fastdet compress` tries both on generated scenes: a set qualifies when its outputs before NMS stay within the
INT8 export check's tolerances of the quantized program run with fake quantization (the reference Paddle itself
computes), and the fastest qualifying set is written to compress_report.json (`paddle_int8_ops`), which the
Paddle runner reads. (Until issue 20 this compared NMS outputs by a greedy match and a largest score
difference, the check that failed correct exports on other CPUs.)
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def choose_int8_ops(model_dir: Path, runs: int = 5, log=print) -> dict:
    """{'choice': 'conv'|'all', 'candidates': {set: {'ms', 'score_median', 'score_p90', 'box_iou_median', 'ok'}}}
    for `model_dir` (a quantized Paddle program with its deploy config). Each set's outputs before NMS are held
    to the INT8 export check's tolerances (export/int8_check.py: output_agreement) against the program run with
    fake quantization, on the same generated scenes (tolerances widened for a program that is itself sensitive to
    rounding, as the check does); the fastest set within them is chosen."""
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.errors import FastdetError
    from fastdet_cli.export.int8_check import SEEDS, output_agreement, program_before_nms, rounding_spread, runs_on
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.paddle import INT8_OP_SETS
    from fastdet_cli.runtime.registry import BACKENDS, create_runner

    feeds = [sample_inputs(resolve_model(str(model_dir)).deploy, seed) for seed in SEEDS]
    out: dict = {"candidates": {}, "compared": "outputs before NMS on generated scenes (export/int8_check.py)"}
    with program_before_nms(model_dir) as raw:
        def run(opts: RunnerOptions) -> tuple[list, list[float]]:
            with create_runner(BACKENDS["paddle"], raw, opts) as runner:
                outs = [runner.infer({k: f[k] for k in runner.input_metadata()}) for f in feeds]
                feed = {k: feeds[0][k] for k in runner.input_metadata()}
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    runner.infer(feed)
                    times.append(time.perf_counter() - t0)
            return outs, times

        reference = runs_on("paddle", raw, feeds)  # the program with fake quantization
        measured: dict[str, tuple[list, list[float]]] = {}
        for name in INT8_OP_SETS:
            try:
                measured[name] = run(RunnerOptions(threads=1, precision="int8", mkldnn_int8_ops=name))
            except FastdetError as e:  # e.g. a program oneDNN INT8 refuses
                out["candidates"][name] = {"ok": False, "error": str(e)}
        spread = rounding_spread(raw, feeds, reference)  # changes `raw`: after every candidate ran on it
        out["rounding_spread"] = {k: round(v, 4) for k, v in spread.items()}
    for name, (found, times) in measured.items():
        f = output_agreement(reference, found, spread)
        out["candidates"][name] = {"ms": round(1000 * float(np.median(times)), 2),
                                   "score_median": round(f.figures.get("score median", 0.0), 4),
                                   "score_p90": round(f.figures.get("score p90", 0.0), 4),
                                   "box_iou_median": round(f.figures.get("box IoU median", 1.0), 4),
                                   "ok": not f.problems}
    good = {k: v["ms"] for k, v in out["candidates"].items() if v["ok"]}
    out["choice"] = min(good, key=good.get) if good else "conv"
    summary = ", ".join(f"{k}: " + (f"{v['ms']} ms, score change {v['score_median']:.3f} median / "
                                    f"{v['score_p90']:.3f} p90, box IoU {v['box_iou_median']:.2f}"
                                    + ("" if v["ok"] else " (outside the INT8 tolerances)")
                                    if "ms" in v else v["error"])
                        for k, v in out["candidates"].items())
    log(f"Paddle oneDNN INT8 op set: '{out['choice']}' ({summary})")
    return out
