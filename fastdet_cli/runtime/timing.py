"""Comparing runtimes on a shared machine: the runs of the models compared alternate, one inference each, so a
load that comes and goes on the other core slows them alike and their ratio holds where separate timings do not
(on a 4 ms model, two 100-run timings taken one after the other moved by ±15% between identical runs here)."""
from __future__ import annotations

import time

import numpy as np

from fastdet_cli import interrupt


def alternate_ms(runs: list[tuple[object, dict[str, np.ndarray]]], min_runs: int = 9, min_seconds: float = 1.0,
                 max_runs: int = 300, warmup: int = 3) -> list[float]:
    """Median milliseconds of each (runner, feed) in `runs` (active runners: `runner.infer(feed)`), timed in
    turn, one inference each, after `warmup` untimed runs each: at least `min_runs` rounds and `min_seconds` of
    timed runs in all, at most `max_runs` rounds."""
    for runner, feed in runs:
        for _ in range(warmup):
            runner.infer(feed)
    times: list[list[float]] = [[] for _ in runs]
    while len(times[0]) < max_runs and (len(times[0]) < min_runs or sum(map(sum, times)) < 1000 * min_seconds):
        for (runner, feed), out in zip(runs, times):
            interrupt.check()
            t0 = time.perf_counter()
            runner.infer(feed)
            out.append(1000 * (time.perf_counter() - t0))
    return [round(float(np.median(t)), 3) for t in times]
