"""The one runner contract every backend follows.

A backend overrides small hooks only: `_activate` (build the session/engine), `_input_metadata`,
`_infer` (one synchronous run: host arrays in, host arrays out, device copies included), `_deactivate`,
and optionally `_op_profile` (what the runtime executed, op by op: `fastdet inspect`) and the classmethod
`check_available` (what the backend needs on this machine beyond its library and a GPU, before any model work).
The base class does the state checks, the input checks and the timing of the last call, and is a context
manager. Building is separate from running, so a benchmark can time the build on its own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastdet_cli.errors import FastdetError


@dataclass
class RunnerOptions:
    """Settings shared by all backends; a backend ignores what does not apply and rejects what it cannot do."""

    device: str = "cpu"  # "cpu" or "gpu" (OpenVINO also takes its own device names, e.g. "GPU.0")
    threads: int = 1  # intra-op CPU threads
    precision: str = "fp32"  # "fp32", "fp16" (e.g. TensorRT / OpenVINO inference hint), "bf16" (CPU), "int8"
    fp16: bool = False  # with int8: layers left in float run in reduced precision (TensorRT FP16; OpenVINO's
    #                      f16 on GPU / bf16 on CPUs that have it)
    pinned: bool = False  # page-locked host buffers for host<->device copies (GPU backends)
    profile: bool = False  # the runtime's per-op profiler on (`Runner.op_profile`, `fastdet inspect`)
    mkldnn: bool = True  # Paddle Inference on CPU: oneDNN on/off
    mkldnn_int8: bool = True  # Paddle Inference on CPU with an INT8 program: oneDNN's INT8 pass on/off
    mkldnn_int8_ops: str | None = None  # which ops that pass quantizes: "conv" | "all" (None: the model's report)
    gpu_id: int = 0
    min_subgraph_size: int | None = None  # Paddle-TensorRT: smallest subgraph handed to TensorRT
    input_shapes: dict[str, tuple] = field(default_factory=dict)  # fixed shapes for dynamic inputs (TensorRT)
    # TensorRT optimization profile: input → (min, max) shapes the engine accepts; input_shapes is the opt shape
    shape_ranges: dict[str, tuple[tuple, tuple]] = field(default_factory=dict)
    cache_dir: Path | None = None  # engine caches (TensorRT)
    ort_session_config: dict[str, str] = field(default_factory=dict)  # ONNX Runtime session config entries
    graph_optimization: str = "all"  # ONNX Runtime graph optimization level: "all" or "basic" (builds faster)
    openvino_config: dict[str, object] = field(default_factory=dict)  # OpenVINO compile properties


@dataclass(frozen=True)
class OpTime:
    """One op the runtime executed, as its profiler reports it."""

    name: str
    op_type: str  # the runtime's kernel/op type (ORT: QLinearConv, Conv…; OpenVINO: Convolution, FakeQuantize…)
    precision: str  # "int8" | "float" | "q/dq" (a quantize/dequantize/reorder step) | "other"
    ms: float  # mean milliseconds per run


@dataclass
class Kernels:
    """Which kernels the runtime chose: convolution implementations by instruction set (e.g. {"avx512_amx": 57,
    "avx512": 41}), how that was read ("executed graph", "oneDNN verbose", "CPU flags"), and the float precision
    the runtime really uses where it can be asked (OpenVINO's inference precision)."""

    conv_isa: dict[str, int] = field(default_factory=dict)
    source: str = ""
    inference_precision: str | None = None
    int8_dot: str | None = None  # which unit the INT8 convolutions' dot products use (int8_dot_product)

    def summary(self) -> str:
        isa = " · ".join(f"{k} {v}" if v else k for k, v in self.conv_isa.items()) or "?"
        prec = f", float ops in {self.inference_precision}" if self.inference_precision else ""
        dot = f", INT8 dot products: {self.int8_dot}" if self.int8_dot else ""
        return f"{isa} ({self.source}{prec}{dot})"


# The dot-product units a runtime's kernel names mark when its kernels use them, by how the names were read
# (Kernels.source). OpenVINO's executed graph names AMX (brgconv_avx512_amx_1x1_I8) but never VNNI: on a VNNI CPU
# without AMX its INT8 kernels are `avx512 int8` whether oneDNN dispatched VNNI instructions or not. oneDNN's
# verbose (Paddle Inference) names both (avx512_core_vnni, avx512_core_amx). ONNX Runtime's MLAS names none: it
# picks its kernels by CPUID.
NAMED_UNITS = {"executed graph": ("amx",), "oneDNN verbose": ("amx", "vnni")}


def int8_dot_product(conv_isa: dict[str, int], source: str, cpu_flags: list[str]) -> str | None:
    """What is known of the unit the INT8 convolutions multiply with, from their kernel names and the CPU's
    flags: "AMX" / "VNNI" (the runtime's names say so), "AMX unused" / "VNNI unused" (the runtime names that unit
    when it uses it, and no INT8 kernel is named so: measured), "AMX by CPUID" / "VNNI by CPUID" (the CPU has it,
    the names cannot tell), "no VNNI on this CPU" (int16 pairs); None without INT8 convolution kernels."""
    int8 = [k for k in conv_isa if "int8" in k.split()]
    if not int8:
        return None
    marks = NAMED_UNITS.get(source, ())
    named = [u for u in marks if any(u in k for k in int8)]
    if named:
        return named[0].upper()
    unit = "AMX" if "amx_int8" in cpu_flags else "VNNI" if {"avx512_vnni", "avx_vnni"} & set(cpu_flags) else None
    if unit is None:
        return "no VNNI on this CPU"
    return f"{unit} unused" if unit.lower() in marks else f"{unit} by CPUID"


@dataclass(frozen=True)
class TensorMeta:
    dtype: np.dtype
    shape: tuple  # ints, or None/str for dynamic dimensions


class Runner:
    """Base runner. Use as `with Runner(model, opts) as r: outputs = r.infer(feed)`."""

    name = "base"

    def __init__(self, model_path: Path | bytes, options: RunnerOptions | None = None):
        # a serialized model (bytes) is taken by backends that can load one from memory (ort): the
        # sensitivity search runs hundreds of in-memory variants
        self.model_bytes = bytes(model_path) if isinstance(model_path, (bytes, bytearray)) else None
        self.model_path = Path("<in-memory model>") if self.model_bytes is not None else Path(model_path)
        self.options = options or RunnerOptions()
        self.is_active = False
        self.last_inference_time: float | None = None  # seconds, of the last infer() call
        self.build_time: float | None = None
        self._inputs: dict[str, TensorMeta] | None = None

    # ---- hooks for backends -------------------------------------------------------------
    @classmethod
    def check_available(cls) -> None:
        """What this backend needs on this machine beyond its library being found and, for a GPU-only backend, a
        visible GPU (BackendSpec.check_can_run checks those and calls this between them), checked before any model
        work: raise MissingDependency or NoDevice. Most backends need nothing more (ONNX Runtime on the GPU needs
        its CUDA execution provider, which only the onnxruntime-gpu wheel has)."""

    def _activate(self) -> None:
        raise NotImplementedError

    def _input_metadata(self) -> dict[str, TensorMeta]:
        raise NotImplementedError

    def _output_names(self) -> list[str]:
        raise NotImplementedError

    def _infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass

    def _kernels(self, feed: dict[str, np.ndarray]) -> Kernels | None:
        return None

    def _op_profile(self, feed: dict[str, np.ndarray], runs: int) -> list[OpTime]:
        raise FastdetError(f"backend '{self.name}' has no per-op profile in fastdet (ort and openvino have)")

    # ---- the contract ---------------------------------------------------------------------
    def activate(self) -> Runner:
        if self.is_active:
            raise FastdetError(f"{self.name} runner is already active")
        t0 = time.perf_counter()
        self._activate()
        self.build_time = time.perf_counter() - t0
        self.is_active = True
        self._inputs = self._input_metadata()
        return self

    def deactivate(self) -> None:
        if not self.is_active:
            raise FastdetError(f"{self.name} runner is not active")
        self._deactivate()
        self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc) -> None:
        if self.is_active:
            self.deactivate()

    def input_metadata(self) -> dict[str, TensorMeta]:
        self._require_active()
        return dict(self._inputs)

    def output_names(self) -> list[str]:
        self._require_active()
        return self._output_names()

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One run on host arrays; returns host arrays in the model's output order."""
        self._require_active()
        self._check_feed(feed)
        t0 = time.perf_counter()
        out = self._infer({k: feed[k] for k in self._inputs})
        self.last_inference_time = time.perf_counter() - t0
        return out

    def kernels(self, feed: dict[str, np.ndarray]) -> Kernels | None:
        """The kernels this runtime chose for the model (None where it cannot be read)."""
        from fastdet_cli.machine import cpu_model_and_flags

        self._require_active()
        k = self._kernels({k: feed[k] for k in self._inputs})
        if k is not None and str(self.options.device).lower() == "cpu":
            k.int8_dot = int8_dot_product(k.conv_isa, k.source, cpu_model_and_flags()[1])
        return k

    def float_islands(self) -> dict | None:
        """For a quantized model, what the runtime's optimized graph leaves in float between quantized ops:
        {"float_between_int8": count, "float_between_int8_types": {op type: count}, "ops": every op type's count};
        None where the runtime does not expose its optimized graph."""
        return None

    def op_profile(self, feed: dict[str, np.ndarray], runs: int = 20) -> list[OpTime]:
        """Run `runs` times with the runtime's profiler on; per-op mean times, slowest first. The runner must
        have been built with `RunnerOptions(profile=True)`."""
        self._require_active()
        if not self.options.profile:
            raise FastdetError(f"{self.name} runner was built without RunnerOptions(profile=True)")
        self._check_feed(feed)
        ops = self._op_profile({k: feed[k] for k in self._inputs}, runs)
        return sorted(ops, key=lambda o: -o.ms)

    def _require_active(self) -> None:
        if not self.is_active:
            raise FastdetError(f"{self.name} runner used before activate()")

    def _check_feed(self, feed: dict[str, np.ndarray]) -> None:
        missing = [k for k in self._inputs if k not in feed]
        if missing:
            raise FastdetError(f"{self.name}: missing model input(s) {missing}; the model takes {list(self._inputs)}")
        for name, meta in self._inputs.items():
            arr = feed[name]
            if arr.dtype != meta.dtype:
                raise FastdetError(f"{self.name}: input {name!r} has dtype {arr.dtype}, the model wants {meta.dtype}")
            if len(meta.shape) != arr.ndim or any(
                    isinstance(d, int) and d > 0 and d != a for d, a in zip(meta.shape, arr.shape)):
                raise FastdetError(f"{self.name}: input {name!r} has shape {arr.shape}, the model wants {meta.shape}")
