"""Time several forms of one model side by side on ONNX Runtime and OpenVINO: the runs are interleaved
(round-robin, one call of each model per round) so that the shared machine's noise hits every candidate alike,
and medians per candidate and backend are reported with the ratio to the first candidate (the FP32 baseline).

    python benchmarks/int8_routes.py fp32=DIR_OR_ONNX ptq=DIR ort=DIR [--rounds 200] [--warmup 20]
        [--backends ort,openvino] [--threads 1] [--json OUT]

A candidate is anything `--model` takes (a Paddle dir is exported to ONNX first). Input: one generated
scene through the model's own preprocessing. CPU flags are printed with the table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="NAME=PATH; the first is the baseline")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--backends", default="ort,openvino")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.machine import machine_info
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    named = [m.split("=", 1) for m in args.models]
    sources = {name: onnx_for(resolve_model(path)) for name, path in named}
    feed_all = sample_inputs(next(iter(sources.values())).deploy)
    results: dict[str, dict[str, float]] = {}
    for backend in args.backends.split(","):
        runners = {}
        for name, src in sources.items():
            opts = RunnerOptions(threads=args.threads, precision="int8" if src.sidecar().get("quantized") else "fp32")
            r = create_runner(backend, src.path, opts)
            r.activate()
            runners[name] = (r, {k: feed_all[k] for k in r.input_metadata()})
        times: dict[str, list[float]] = {name: [] for name in runners}
        for i in range(args.warmup + args.rounds):
            for name, (r, feed) in runners.items():
                t0 = time.perf_counter()
                r.infer(feed)
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1000)
        for r, _ in runners.values():
            r.deactivate()
        results[backend] = {name: statistics.median(t) for name, t in times.items()}
    info = machine_info()
    table = Table(title=f"runtime medians (ms), {args.rounds} interleaved rounds after {args.warmup} warm-up, "
                        f"{args.threads} thread(s); CPU {info['cpu']}", title_justify="left")
    table.add_column("model")
    for b in results:
        table.add_column(f"{b} ms", justify="right")
        table.add_column(f"{b} speedup", justify="right")
    base = named[0][0]
    for name, _ in named:
        cells = []
        for _b, med in results.items():
            cells += [f"{med[name]:.2f}", f"{med[base] / med[name]:.2f}x"]
        table.add_row(name, *cells)
    Console(width=200).print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rounds": args.rounds, "warmup": args.warmup,
                                         "threads": args.threads, "models": dict(named),
                                         "median_ms": results}, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
