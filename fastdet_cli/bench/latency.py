"""Timing loops and their statistics. Warm-up excluded; time.perf_counter; each timed call is synchronous
(runners return host arrays, so device work and copies are inside the timed region)."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from collections.abc import Callable


@dataclass(frozen=True)
class Stats:
    """Milliseconds."""

    mean: float
    p50: float
    p90: float
    p99: float
    stdev: float
    n: int

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        ms = sorted(s * 1000.0 for s in seconds)
        n = len(ms)

        def pct(q: float) -> float:  # nearest-rank percentile
            return ms[min(n - 1, max(0, int(round(q / 100.0 * n + 0.5)) - 1))]

        return cls(statistics.fmean(ms), statistics.median(ms), pct(90), pct(99),
                   statistics.stdev(ms) if n > 1 else 0.0, n)

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


WARMUP_SHARE = 0.2  # with a time bound T, warm-up stops after its runs or 0.2·T, whichever comes first


def time_calls(fn: Callable[[], object], warmup: int, repeat: int,
               progress: Callable[[int], None] | None = None, seconds: float | None = None) -> list[float]:
    """Run `fn` warmup times untimed, then `repeat` times timed; return the durations in seconds. With `seconds`
    (bench --time), the timed runs also stop once they add up to that many seconds (at least one run) and the
    warm-up after WARMUP_SHARE of it: `repeat` and `warmup` become "at most" (`len(result) < repeat` says the
    time bound ended it). `progress(n)` hears of every call, warm-up included (n at a time, outside the timed
    region); the runs a bound skipped are reported at the end, so a bar whose total is warmup + repeat fills."""
    t_start, done = time.perf_counter(), 0
    while done < warmup and (seconds is None or time.perf_counter() - t_start < WARMUP_SHARE * seconds):
        fn()
        done += 1
    if progress and warmup:
        progress(warmup)
    out: list[float] = []
    told = 0
    while len(out) < repeat and (seconds is None or not out or sum(out) < seconds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if progress and len(out) % 10 == 0:
            progress(10)
            told += 10
    if progress and repeat > told:
        progress(repeat - told)
    return out
