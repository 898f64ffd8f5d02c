"""Where the time goes on OpenVINO in each precision: FP32 (f32 hint), BF16 (the FP32 model, bf16 hint), INT8
and INT8+BF16 — per op type, from OpenVINO's own per-op profile (PERF_COUNT), 1 thread, with the kernels each
convolution ran. Made to answer "why is INT8 not faster than BF16 on an AMX CPU": if the convolutions are a
small share of BF16's time, no INT8 kernel can make the whole model much faster.

    python benchmarks/openvino_precision_profile.py FP32_MODEL INT8_MODEL [--runs 5] [--json OUT]

Models: anything `fastdet` resolves (a Paddle dir is exported to ONNX as bench does). Prints one table; the
JSON has every op type per precision.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from fastdet_cli.runtime.registry import BACKENDS

ROOT = Path(__file__).resolve().parents[1]


def profile(model: str, precision: str, fp16: bool, runs: int) -> dict:
    from fastdet_cli.artifacts import for_backend
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    source = for_backend(resolve_model(model), BACKENDS["openvino"])
    feed = sample_inputs(source.deploy)
    opts = RunnerOptions(threads=1, precision=precision, fp16=fp16, profile=True)
    with create_runner("openvino", source.runner_path, opts) as runner:
        feed = {k: feed[k] for k in runner.input_metadata()}
        runner.infer(feed)
        ops = runner.op_profile(feed, runs)
        kernels = runner.kernels(feed)
    by_type, total = Counter(), 0.0
    for o in ops:
        by_type[o.op_type] += o.ms
        total += o.ms
    conv = sum(ms for t, ms in by_type.items() if "Convolution" in t)
    return {"total_ms": round(total, 2), "convolution_ms": round(conv, 2),
            "by_type_ms": {t: round(ms, 2) for t, ms in by_type.most_common()}, "kernels": kernels.summary()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32_model")
    ap.add_argument("int8_model")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from fastdet_cli.machine import cpu_model_and_flags
    from fastdet_cli.ui import Table, make_console

    rows = {"FP32": (args.fp32_model, "fp32", False), "BF16": (args.fp32_model, "bf16", False),
            "INT8": (args.int8_model, "int8", False), "INT8+BF16": (args.int8_model, "int8", True)}
    result = {name: profile(m, p, f, args.runs) for name, (m, p, f) in rows.items()}
    console = make_console()
    cpu, flags = cpu_model_and_flags()
    t = Table(title=f"OpenVINO per-op profile, mean of {args.runs} runs, 1 thread; {cpu} ({' '.join(flags)})",
              title_justify="left")
    for col in ("precision", "ops total ms", "convolutions ms", "other ops ms", "convolution share", "top other ops",
                "kernels"):
        t.add_column(col)
    for name, r in result.items():
        other = {k: v for k, v in r["by_type_ms"].items() if "Convolution" not in k}
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(other.items())[:3])
        t.add_row(name, f"{r['total_ms']:.1f}", f"{r['convolution_ms']:.1f}",
                  f"{r['total_ms'] - r['convolution_ms']:.1f}",
                  f"{100 * r['convolution_ms'] / max(r['total_ms'], 1e-9):.0f}%", top, r["kernels"])
    console.print(t)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "flags": flags, "runs": args.runs, "rows": result}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
