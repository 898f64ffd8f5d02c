"""The one backend table: selection, --help choices, `fastdet env` and validation all read it."""
from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:
    from fastdet_cli.runtime.base import Runner, RunnerOptions


# the reference's four columns (pm = pinned memory) and BF16: the FP32 model in bf16 on CPUs that have it in
# hardware. On a CPU, INT8+FP16 is INT8 with the float parts in bf16 (there is no fp16 arithmetic to ask for).
MODES = ("fp32", "bf16", "int8", "int8+fp16", "int8+fp16+pm")
FP32_MODEL_MODES = ("fp32", "bf16")  # the modes that run the FP32 model (the others run an INT8 artifact)
MAP_MODES = ("fp32", "bf16", "int8")  # the modes whose mAP bench measures
AS_GIVEN = "fp32 (as given)"  # bench's row of the user's FP32 graph where the FP32 rows run a faster rewrite of it
# ONNX Runtime's CUDA provider: a wheel that replaces onnxruntime (same module), which no pip extra can swap in
ORT_GPU_INSTALL = ("pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]==<the version of "
                   "onnxruntime in requirements.lock, where the index has it>' (no pip extra of fastdet can: the GPU "
                   "wheel replaces onnxruntime; benchmarks/gpu_check.sh with FASTDET_ORT_GPU=1 does it, "
                   "docs/toolchain.md)")
MODE_LABELS = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8", "int8+fp16": "INT8+FP16/BF16",
               "int8+fp16+pm": "pinned-memory"}
_MODE_OPTIONS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}, "int8": {"precision": "int8"},
                 "int8+fp16": {"precision": "int8", "fp16": True},
                 "int8+fp16+pm": {"precision": "int8", "fp16": True, "pinned": True}}


@dataclass(frozen=True)
class BackendSpec:
    """One backend and everything the rest of fastdet may ask about it (no code outside runtime/ compares
    backend names: it reads these fields)."""

    name: str
    target: str  # "module:Class", imported only when the backend is used
    module: str  # the library it needs
    dist: str  # its distribution name, for the version
    extra: str  # the pip extra of fastdet-cli that installs it ("none": no extra can; install_hint says how)
    model_format: str  # what it loads: "onnx" (an ONNX file; TensorRT builds its engine from it) or "paddle"
    devices: tuple[str, ...]
    precisions: tuple[str, ...]  # RunnerOptions.precision values it takes
    modes: tuple[str, ...]  # bench modes (MODES) it can run; the others are "None" in the tables
    description: str
    # INT8 artifact kinds it runs, best first (artifacts.py; measured in docs/performance.md)
    int8_kinds: tuple[str, ...] = ("paddle-program",)
    # the same library under other distribution names (TensorRT's wheels are per CUDA major: tensorrt-cu12, …)
    other_dists: tuple[str, ...] = ()
    profiles_ops: bool = False  # Runner.op_profile works (`fastdet inspect`)
    copies_in_compute: bool = False  # host<->device copies happen inside its timed run (GPU backends)
    device_names: bool = False  # takes the library's own device names (e.g. OpenVINO's GPU.0) besides cpu/gpu
    onnx_target: str = "onnxruntime"  # the ONNX flavour it gets from a Paddle model (export_onnx's target)
    static_shapes: bool = False  # builds for fixed input shapes: taken from the deploy config's preprocessing
    no_mode_reasons: tuple[tuple[str, str], ...] = ()  # (mode, why it has none) where there is more to say
    install_hint: str | None = None  # the install command where no pip extra brings the library (MissingDependency)

    @property
    def gpu_only(self) -> bool:
        return "cpu" not in self.devices

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module.split(".")[0]) is not None

    def version(self) -> str | None:
        """The installed library's version, under whichever of its distribution names is installed."""
        from fastdet_cli.machine import installed_distribution

        found = installed_distribution((self.dist, *self.other_dists))
        return found[1] if found else None

    def runner_class(self) -> type[Runner]:
        mod, cls = self.target.split(":")
        return getattr(importlib.import_module(mod), cls)

    def mode_options(self, mode: str, threads: int) -> RunnerOptions:
        """RunnerOptions for a bench mode; UnsupportedMode (a "None" cell, with the reason) when this backend
        has no such mode."""
        from fastdet_cli.errors import UnsupportedMode
        from fastdet_cli.runtime.base import RunnerOptions

        if mode not in self.modes:
            why = dict(self.no_mode_reasons).get(mode)
            raise UnsupportedMode(why or f"{self.name} has no {MODE_LABELS[mode]} mode"
                                  + (" on CPU" if not self.gpu_only else ""))
        return RunnerOptions(device="gpu" if self.gpu_only else "cpu", threads=threads, **_MODE_OPTIONS[mode])

    def check_can_run(self) -> None:
        """The one check that this backend can run here, before any model work: its library is installed (found,
        not imported: Paddle must be imported after pycocotools, lazy.py), what its runner needs besides
        (`Runner.check_available`, e.g. ONNX Runtime's CUDA provider for ort-gpu) and, for a GPU-only backend, an
        NVIDIA GPU is visible (a runner asked for a GPU checks its device itself). What is missing to install comes
        first. Raises MissingDependency or NoDevice: a bench row's "skipped", a command's error line."""
        from fastdet_cli.errors import MissingDependency

        if not self.installed():
            raise MissingDependency(self.module, self.extra, f"backend '{self.name}'", hint=self.install_hint)
        self.runner_class().check_available()
        if self.gpu_only:
            require_gpu(f"backend '{self.name}'")


BACKENDS: dict[str, BackendSpec] = {b.name: b for b in (
    BackendSpec("ort", "fastdet_cli.runtime.onnxruntime:OrtRunner", "onnxruntime", "onnxruntime", "base", "onnx",
                ("cpu", "gpu"), ("fp32", "int8"), ("fp32", "int8"),
                "ONNX Runtime (CPU; CUDA execution provider when present)",
                int8_kinds=("ort-qdq", "onnx-qdq", "paddle-program"), profiles_ops=True,
                other_dists=("onnxruntime-gpu",),  # the CUDA provider's wheel, in place of onnxruntime
                no_mode_reasons=(("bf16", "ONNX Runtime's CPU provider has no bf16 convolutions"),
                                 ("int8+fp16", "ONNX Runtime's CPU provider has no bf16/fp16 for the float parts"))),
    BackendSpec("openvino", "fastdet_cli.runtime.openvino:OpenVinoRunner", "openvino", "openvino", "openvino",
                "onnx", ("cpu", "gpu"), ("fp32", "fp16", "bf16", "int8"), ("fp32", "bf16", "int8", "int8+fp16"),
                "OpenVINO from ONNX", int8_kinds=("paddle-program", "onnx-qdq", "ort-qdq"), profiles_ops=True,
                device_names=True),
    BackendSpec("paddle", "fastdet_cli.runtime.paddle:PaddleRunner", "paddle", "paddlepaddle", "paddle", "paddle",
                ("cpu", "gpu"), ("fp32", "bf16", "int8"), ("fp32", "bf16", "int8"), "Paddle Inference (oneDNN on CPU)",
                no_mode_reasons=(("int8+fp16", "Paddle Inference 2.6 runs oneDNN INT8 or BF16, not both (its INT8 "
                                               "pass list replaces the BF16 one)"),)),
    BackendSpec("trt", "fastdet_cli.runtime.tensorrt:TrtRunner", "tensorrt", "tensorrt", "trt", "onnx",
                ("gpu",), ("fp32", "fp16", "int8"), ("fp32", "int8", "int8+fp16", "int8+fp16+pm"),
                "TensorRT engine built from ONNX",
                int8_kinds=("paddle-program", "onnx-qdq", "ort-qdq"), copies_in_compute=True,
                onnx_target="tensorrt", static_shapes=True,
                other_dists=("tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12_bindings", "tensorrt_cu13_bindings",
                             "tensorrt_cu12_libs", "tensorrt_cu13_libs")),
    BackendSpec("paddle-trt", "fastdet_cli.runtime.paddle:PaddleTrtRunner", "paddle", "paddlepaddle", "paddle",
                "paddle", ("gpu",), ("fp32", "fp16", "int8"), ("fp32", "int8"),
                "Paddle Inference with its TensorRT subgraph engine", copies_in_compute=True),
    # ONNX Runtime on its CUDA execution provider: the same library and runner as `ort`, always on the GPU (bench's
    # ort rows stay on the CPU provider). Its wheel, onnxruntime-gpu, replaces onnxruntime (one module), so no pip
    # extra can bring it: install_hint says how. Never run on a GPU: the INT8 preference is ort's, never measured
    # here (ORT's FAQ: its CUDA build has QuantizeLinear/DequantizeLinear/MatMulInteger among the quantization ops,
    # so an INT8 graph's convolutions are expected to run in float between Q/DQ steps; the row shows the cost).
    BackendSpec("ort-gpu", "fastdet_cli.runtime.onnxruntime:OrtGpuRunner", "onnxruntime", "onnxruntime-gpu", "none",
                "onnx", ("gpu",), ("fp32", "int8"), ("fp32", "int8"),
                "ONNX Runtime on its CUDA execution provider (onnxruntime-gpu)",
                int8_kinds=("ort-qdq", "onnx-qdq", "paddle-program"), copies_in_compute=True,
                other_dists=("onnxruntime",),  # the CPU wheel (no CUDA provider: check_can_run says so)
                install_hint=ORT_GPU_INSTALL,
                no_mode_reasons=(
                    ("bf16", "ONNX Runtime's CUDA provider runs an FP32 model in fp32 (bf16 would need a converted "
                             "model)"),
                    ("int8+fp16", "ONNX Runtime's CUDA provider runs an INT8 model's float parts in fp32 (fp16 "
                                  "would need a converted model)"),
                    ("int8+fp16+pm", "fastdet gives ONNX Runtime host arrays (session.run), no pinned-memory "
                                     "IO binding"))),
)}


def get_backend(name: str | BackendSpec) -> BackendSpec:
    """The backend called `name` (a spec is returned as it is: commands resolve --backend once, and the library
    passes the spec on), or an error with a "did you mean"."""
    if isinstance(name, BackendSpec):
        return name
    if name in BACKENDS:
        return BACKENDS[name]
    close = difflib.get_close_matches(name, BACKENDS, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise FastdetError(f"unknown backend '{name}'{hint}; choose from {', '.join(BACKENDS)}")


def create_runner(backend: str | BackendSpec, model_path: Path | bytes, options: RunnerOptions) -> Runner:
    """Validate the backend/device/precision combination and build (not activate) its runner."""
    spec = get_backend(backend)
    name = spec.name
    device = options.device.lower().split(".")[0].split(":")[0]
    if device == "cpu" and "cpu" not in spec.devices:  # a GPU-only backend picks its device itself
        import dataclasses

        options = dataclasses.replace(options, device="gpu")
        device = "gpu"
    if not spec.device_names and device not in spec.devices:
        raise FastdetError(f"backend '{name}' does not run on device '{options.device}' "
                           f"(it runs on: {', '.join(spec.devices)})")
    if options.precision not in spec.precisions:
        raise FastdetError(f"backend '{name}' has no {options.precision} mode (it has: {', '.join(spec.precisions)})")
    from fastdet_cli.lazy import require

    require(spec.module, spec.extra, f"backend '{name}'", hint=spec.install_hint)
    return spec.runner_class()(model_path, options)


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """NVIDIA GPUs visible to this process (0 without a driver): the check every GPU backend makes first. Asked
    of CUDA's runtime (cudaGetDeviceCount, which honours CUDA_VISIBLE_DEVICES) when cuda-python is installed;
    else the driver's /proc/driver/nvidia/gpus; else `nvidia-smi -L` (containers often hide /proc's entry)."""
    import importlib

    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            cudart = importlib.import_module(name)
        except ImportError:
            continue
        try:
            err, count = cudart.cudaGetDeviceCount()
            if int(err) == 0:
                return int(count)
        except Exception:  # a broken CUDA install: fall back to the driver's own word
            pass
        break
    # the driver's count of the machine's GPUs, narrowed to those CUDA_VISIBLE_DEVICES lets this process see
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir():
        return visible_devices(len(list(gpus.iterdir())), os.environ.get("CUDA_VISIBLE_DEVICES"))
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return visible_devices(sum(line.startswith("GPU ") for line in out.splitlines()),
                           os.environ.get("CUDA_VISIBLE_DEVICES"))


def visible_devices(physical: int, cuda_visible: str | None) -> int:
    """How many of `physical` GPUs a CUDA process sees under CUDA_VISIBLE_DEVICES=`cuda_visible` (None: unset, all):
    CUDA takes the listed devices up to the first entry that names none (an index out of range, -1, an empty list:
    none at all); GPU-/MIG- UUIDs are taken as naming a device."""
    if cuda_visible is None:
        return physical
    seen = 0
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if entry.startswith(("GPU-", "MIG-")) or (entry.isdigit() and int(entry) < physical):
            seen += 1
        else:
            break
    return min(seen, physical)


def require_gpu(what: str) -> None:
    from fastdet_cli.errors import NoDevice

    if cuda_device_count() == 0:
        raise NoDevice(f"{what} needs an NVIDIA GPU, and none is visible on this machine (CUDA runtime, "
                       "/proc/driver/nvidia and nvidia-smi -L see none)")
