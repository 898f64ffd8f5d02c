"""`fastdet inspect`: what a runtime really executes for a model — which ops run in INT8 and which in float,
how many quantize/dequantize steps are left, the slowest ops — and, for a quantized model, a verdict on why
INT8 is (not) faster. Built on the runners' per-op profiles (`Runner.op_profile`)."""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from fastdet_cli.errors import FastdetError
from fastdet_cli.machine import VNNI_FLAGS
from fastdet_cli.runtime.base import Kernels, OpTime
from fastdet_cli.runtime.registry import BackendSpec


@dataclass
class Inspection:
    model: str
    spec: BackendSpec  # the backend that ran the profile
    quantized: bool
    runs: int
    threads: int
    ops: list[OpTime]  # slowest first
    cpu_flags: list[str] = field(default_factory=list)
    kernels: Kernels | None = None  # the convolution kernels' ISA, as the runtime reports it
    optimized_graph: dict | None = None  # quantized models: float ops left between quantized ops (Runner.float_islands)

    @property
    def backend(self) -> str:
        return self.spec.name

    @property
    def total_ms(self) -> float:
        return sum(o.ms for o in self.ops)

    def by_precision(self) -> dict[str, tuple[int, float]]:
        count, ms = Counter(), Counter()
        for o in self.ops:
            count[o.precision] += 1
            ms[o.precision] += o.ms
        return {p: (count[p], ms[p]) for p in ("int8", "float", "q/dq", "other") if count[p]}

    def by_type(self) -> list[tuple[str, str, int, float]]:
        """(op type, precision, count, ms), most time first."""
        count, ms = Counter(), Counter()
        for o in self.ops:
            count[(o.op_type, o.precision)] += 1
            ms[(o.op_type, o.precision)] += o.ms
        return [(t, p, count[(t, p)], v) for (t, p), v in ms.most_common()]

    def convs(self) -> tuple[int, int]:
        """(convolutions in INT8, convolutions in float)."""
        conv = [o for o in self.ops if "conv" in o.op_type.lower()]
        return sum(o.precision == "int8" for o in conv), sum(o.precision == "float" for o in conv)

    def verdict(self) -> list[str]:
        """Plain-language findings; for a quantized model, the likely reasons INT8 is not (much) faster."""
        total = self.total_ms or 1e-9
        share = {p: ms / total for p, (_, ms) in self.by_precision().items()}
        int8_convs, float_convs = self.convs()
        lines = []
        if not self.quantized:
            top = ", ".join(f"{t} {100 * ms / total:.0f}%" for t, _, _, ms in self.by_type()[:3])
            return [f"FP32 model: {len(self.ops)} ops, {self.total_ms:.2f} ms per run; most time in {top}."]
        if int8_convs == 0:
            lines.append(f"No convolution runs in INT8 on {self.backend}: the quantized graph runs in float with "
                         "fake quantization, every quantize/dequantize pair is extra work, so INT8 is slower than "
                         "FP32.")
            if self.spec.int8_kinds[0] == "ort-qdq":  # it runs ORT-quantized graphs best
                lines.append("ONNX Runtime builds QLinearConv only from DequantizeLinear → Conv → QuantizeLinear; "
                             "this export quantizes convolution inputs only (as the Paddle program computes), so "
                             "no convolution output is quantized and nothing fuses. Quantize for ORT with "
                             "`fastdet compress --engine onnxruntime`; OpenVINO runs this graph in INT8.")
        elif float_convs:
            slow = [o.name for o in self.ops if "conv" in o.op_type.lower() and o.precision == "float"][:3]
            lines.append(f"{float_convs} of {int8_convs + float_convs} convolutions still run in float "
                         f"(slowest: {', '.join(slow)}): layers kept float at compression, or not fusable.")
        islands = (self.optimized_graph or {}).get("float_between_int8")
        if islands:
            kinds = ", ".join(f"{t} {n}" for t, n in self.optimized_graph["float_between_int8_types"].items())
            lines.append(f"The runtime's optimized graph leaves {islands} float op(s) between quantized ops ({kinds}): "
                         "each is a dequantize → float → quantize detour (layers kept float on purpose, or ops "
                         "without an integer kernel).")
        if share.get("q/dq", 0) >= 0.15:
            n = self.by_precision()["q/dq"][0]
            lines.append(f"{100 * share['q/dq']:.0f}% of the time goes to {n} quantize/dequantize/reorder steps "
                         "between INT8 and float ops.")
        if int8_convs and share.get("float", 0) >= 0.3:
            top = [t for t, p, _, _ in self.by_type() if p == "float"][:3]
            lines.append(f"{100 * share['float']:.0f}% of the time is in float ops ({', '.join(top)}), which INT8 "
                         "does not speed up.")
        group = sum(o.ms for o in self.ops if o.op_type == "GroupConvolution")
        if group / total >= 0.25:
            lines.append(f"{100 * group / total:.0f}% of the time is in depthwise (group) convolutions: they are "
                         "memory-bound and gain little from INT8.")
        dot = self.kernels.int8_dot if self.kernels else None
        if int8_convs and dot and dot.endswith(" unused"):  # measured: the runtime names that unit when it uses it
            lines.append(f"This CPU has {dot.split()[0]} but no INT8 convolution kernel uses it "
                         f"({self.kernels.summary()}).")
        if int8_convs and not any(f in self.cpu_flags for f in VNNI_FLAGS):
            lines.append("This CPU has no VNNI (AVX512-VNNI, AVX-VNNI or AMX): 8-bit dot products take several "
                         "AVX2 instructions each, so INT8 convolutions gain far less than the ~4× a VNNI CPU gives.")
        if not lines:
            lines.append(f"{int8_convs} convolutions run in INT8 and little time is lost around them "
                         f"({100 * share.get('int8', 0):.0f}% of the time in INT8 ops).")
        return lines

    def as_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "quantized": self.quantized, "runs": self.runs,
                "threads": self.threads, "total_ms": round(self.total_ms, 4), "cpu_flags": self.cpu_flags,
                "kernels": dataclasses.asdict(self.kernels) if self.kernels else None,
                "optimized_graph": self.optimized_graph,
                "by_precision": {p: {"ops": n, "ms": round(ms, 4)} for p, (n, ms) in self.by_precision().items()},
                "convs": dict(zip(("int8", "float"), self.convs())),
                "by_type": [{"op_type": t, "precision": p, "ops": n, "ms": round(ms, 4)}
                            for t, p, n, ms in self.by_type()],
                "ops": [{"name": o.name, "op_type": o.op_type, "precision": o.precision, "ms": round(o.ms, 4)}
                        for o in self.ops],
                "verdict": self.verdict()}


def inspect_model(model: str | None, spec: BackendSpec, threads: int = 1, runs: int = 50,
                  warmup: int = 5) -> Inspection:
    from fastdet_cli.artifacts import for_backend, form_for, is_quantized
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.machine import cpu_model_and_flags
    from fastdet_cli.runtime.registry import create_runner

    if not spec.profiles_ops:  # before any model work
        from fastdet_cli.runtime.registry import BACKENDS

        have = " and ".join(n for n, b in BACKENDS.items() if b.profiles_ops)
        raise FastdetError(f"backend '{spec.name}' has no per-op profile in fastdet ({have} have)")
    source = resolve_model(form_for(model, spec))
    quantized = is_quantized(source)
    source = for_backend(source, spec)
    feed = sample_inputs(source.deploy)
    # the options bench runs this model with (ORT's kernels line, OpenVINO's precision hint), profiler on
    options = dataclasses.replace(spec.mode_options("int8" if quantized else "fp32", threads), profile=True)
    with create_runner(spec, source.runner_path, options) as runner:
        feed = {k: feed[k] for k in runner.input_metadata()}
        for _ in range(warmup):
            runner.infer(feed)
        ops = runner.op_profile(feed, runs)
        kernels = runner.kernels(feed)
        islands = runner.float_islands() if quantized else None
    return Inspection(str(source.path), spec, quantized, runs, threads, ops, cpu_model_and_flags()[1], kernels,
                      islands)
