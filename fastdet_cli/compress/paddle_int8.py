"""Which ops Paddle Inference should run in oneDNN INT8 for a freshly quantized program, chosen by measuring.

Paddle 2.6.2's oneDNN INT8 passes can quantize convolutions only ('conv') or every op they know ('all',
Paddle's default). Neither is right for every model, measured on this project's two architectures:
PP-YOLOE-l 'all' ran 1.59× faster than FP32 and 'conv' ≈1.0×; on the embedded depthwise PicoDet 'all' was
slower (26.5 vs 19.5 ms) and *wrong* (mAP 0.027 vs 0.578: the scales Paddle propagates to the other ops do not
hold). So `fastdet compress` tries both on a generated scene: a set qualifies when its detections agree with the
quantized program run with fake quantization (the reference Paddle itself computes), and the fastest qualifying
set is written to compress_report.json (`paddle_int8_ops`), which the Paddle runner reads.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def choose_int8_ops(model_dir: Path, runs: int = 5, log=print) -> dict:
    """{'choice': 'conv'|'all', 'candidates': {set: {'ms', 'matched', 'score_diff', 'ok'}}} for `model_dir`
    (a quantized Paddle program with its deploy config)."""
    from fastdet_cli.data.synth import render_image
    from fastdet_cli.artifacts import detector
    from fastdet_cli.errors import FastdetError
    from fastdet_cli.det.match import match_detections
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.paddle import INT8_OP_SETS

    image, _ = render_image(np.random.default_rng([0, 7]))
    with detector(model_dir, "paddle", RunnerOptions(threads=1, precision="int8",
                                                          mkldnn_int8=False)) as det:
        reference = det(image)
    # a model with random weights scores nothing above 0.3: then its 20 best boxes are the ones to agree on
    floor = min(0.3, float(np.sort(reference.scores)[-20:][0])) if len(reference.scores) else 0.3
    out: dict = {"candidates": {}, "boxes_compared": int((reference.scores >= floor).sum())}
    for name in INT8_OP_SETS:
        opts = RunnerOptions(threads=1, precision="int8", mkldnn_int8_ops=name)
        try:
            with detector(model_dir, "paddle", opts) as det:
                found = det(image)
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    det(image)
                    times.append(time.perf_counter() - t0)
        except FastdetError as e:  # e.g. a program oneDNN INT8 refuses
            out["candidates"][name] = {"ok": False, "error": str(e)}
            continue
        agree = match_detections(found, reference, min_score=floor)
        ok = agree["matched"] >= 0.8 and agree["score"] <= 0.1  # the INT8 export check's bounds
        out["candidates"][name] = {"ms": round(1000 * float(np.median(times)), 2), "matched": round(agree["matched"], 3),
                                   "score_diff": round(agree["score"], 4), "ok": ok}
    good = {k: v["ms"] for k, v in out["candidates"].items() if v["ok"]}
    out["choice"] = min(good, key=good.get) if good else "conv"
    summary = ", ".join(f"{k}: " + (f"{v['ms']} ms, {v['matched']:.0%} of boxes agree" if "ms" in v else v["error"])
                        for k, v in out["candidates"].items())
    log(f"Paddle oneDNN INT8 op set: '{out['choice']}' ({summary})")
    return out
