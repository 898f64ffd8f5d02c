"""Facts about the machine that a benchmark or `fastdet env` records."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # 8-bit dot products summed in int32 (no int16 pairs)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # bf16 arithmetic in hardware


def cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return model, [f for f in INTERESTING_FLAGS if f in flags]


def nvidia_gpus() -> tuple[list[str], str | None]:
    """(GPU model names, driver version) from the NVIDIA driver's /proc files; ([], None) without a driver."""
    names = []
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir():
        for info in sorted(gpus.glob("*/information")):
            for line in info.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model":
                    names.append(value.strip())
    return names, _proc_driver()


def _proc_driver() -> str | None:
    """The driver version in /proc/driver/nvidia/version ("NVRM version: NVIDIA UNIX x86_64 Kernel Module
    535.104.05 …"), None without that file."""
    version = Path("/proc/driver/nvidia/version")
    if not version.is_file():
        return None
    words = version.read_text(errors="replace").split()
    return next((w for w in words if w.count(".") >= 1 and w.replace(".", "").isdigit()), None)


def nvidia_driver() -> str | None:
    """The NVIDIA driver's version ("535.104.05"): /proc/driver/nvidia/version, else `nvidia-smi
    --query-gpu=driver_version` (containers often hide /proc's entry); None when neither answers."""
    driver = _proc_driver()
    if driver is not None:
        return driver
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((w for w in out.split() if w.replace(".", "").isdigit() and "." in w), None)


# Wheels built per CUDA major (TensorRT's tensorrt-cu12/-cu13, cuda-python 12/13, onnxruntime-gpu) and the oldest
# NVIDIA driver branch each runs on, newest first: CUDA 13 needs r580, CUDA 12 r525 (NVIDIA's CUDA compatibility
# table). pyproject.toml has `<extra>-cu12` and `<extra>-cu13` for each extra in CUDA_FLAVOURED_EXTRAS.
CUDA_FLAVOURS = (("cu13", 580), ("cu12", 525))
CUDA_FLAVOURED_EXTRAS = ("trt",)


def pip_hint(extra: str, driver: str | None) -> str:
    """The pip command that installs fastdet's `extra`, run in the fastdet clone (fastdet is installed from its
    clone, `pip install -e .`; it is not on the package index). For an extra built per CUDA major
    (CUDA_FLAVOURED_EXTRAS), the flavour NVIDIA driver `driver` runs (None: no driver found): trt-cu13 on r580+,
    trt-cu12 on r525–r579 (the CUDA 13 wheels fail there), trt-cu12 after a driver update below r525, and both,
    with the rule, when the driver is unknown."""
    def cmd(*names: str) -> str:
        return "in the fastdet clone, " + " or ".join(f"pip install -e '.[{name}]'" for name in names)

    if extra not in CUDA_FLAVOURED_EXTRAS:
        return cmd(extra)
    rule = ", ".join(f"{extra}-{f} on NVIDIA driver >= {low}" for f, low in reversed(CUDA_FLAVOURS))
    major = driver.split(".")[0] if driver else ""
    if not major.isdigit():
        both = cmd(*(f"{extra}-{f}" for f, _ in reversed(CUDA_FLAVOURS)))
        return f"{both} ({rule}; no NVIDIA driver version found here)"
    for flavour, low in CUDA_FLAVOURS:
        if int(major) >= low:
            return f"{cmd(f'{extra}-{flavour}')} (NVIDIA driver {driver} runs CUDA {flavour[2:]})"
    flavour, low = CUDA_FLAVOURS[-1]
    return f"update the NVIDIA driver to r{low} or newer (this one is {driver}), then, {cmd(f'{extra}-{flavour}')}"


def installed_distribution(dists) -> tuple[str, str] | None:
    """(name, version) of the first of the distributions `dists` that is installed, None when none is: the one
    lookup of a library's version, which may be installed under several names (TensorRT as `tensorrt`,
    `tensorrt-cu12`, `tensorrt-cu13`, or only their `_bindings` / `_libs` wheels). `fastdet env`, the backend
    table (BackendSpec.version) and the reports' versions all read it."""
    import importlib.metadata

    for dist in dists:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine_info() -> dict[str, str]:
    model, flags = cpu_model_and_flags()
    gpus, driver = nvidia_gpus()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": model,
        "cpu cores": str(os.cpu_count()),
        "cpu flags": " ".join(flags) or "-",
        "gpu": ", ".join(gpus) or "-",
        "nvidia driver": driver or "-",
    }


def hardware_label(machine: dict) -> str:
    """One line naming a report's machine: CPU model and ISA flags, and the GPU and driver when there is one."""
    text = f"{machine.get('cpu', '?')} ({machine.get('cpu flags', '-')})"
    if machine.get("gpu", "-") != "-":
        text += f"; {machine['gpu']}, driver {machine.get('nvidia driver', '-')}"
    return text


def cpu_has(flags: tuple[str, ...]) -> bool:
    """Whether this CPU reports any of `flags` (VNNI_FLAGS, BF16_FLAGS)."""
    return bool(set(flags) & set(cpu_model_and_flags()[1]))


def cpu_kind() -> str:
    """The CPU kind, as far as INT8 and BF16 choices go: "amx" (Intel Xeon with AMX), "vnni" (AVX512-VNNI or
    AVX-VNNI without AMX, e.g. AMD Zen 4), "avx2" (no VNNI), or "other". Models whose making depends on the CPU
    (7- or 8-bit weights, Paddle's measured oneDNN INT8 op set) are cached per kind: one made on a kind is not
    reused on another."""
    flags = set(cpu_model_and_flags()[1])
    if "amx_int8" in flags:
        return "amx"
    if {"avx512_vnni", "avx_vnni"} & flags:
        return "vnni"
    return "avx2" if "avx2" in flags else "other"


def int8_weight_bits(gpu: bool = False) -> tuple[int, str]:
    """(weight bits, why) for INT8 weights deployed on this CPU, or on a GPU (`gpu`: TensorRT's flavour).
    Without VNNI, x86 multiplies u8 activations by s8 weights with vpmaddubsw, which adds pairs of products
    into int16 and saturates (2 × 255 × 127 > 32767): 7-bit weights (ONNX Runtime's reduce_range, NNCF's
    overflow fix) avoid it at a small cost in precision. VNNI (AVX512-VNNI, AVX-VNNI, AMX) sums in int32, and
    GPUs never pair in int16: full 8 bits. The choice follows the CPU the model is made on: a model made on a
    VNNI CPU and deployed on one without should be made with 7 bits (export --weight-bits 7, reduce_range)."""
    if gpu:
        return 8, "8: TensorRT (GPU int8 kernels accumulate in int32)"
    if cpu_has(VNNI_FLAGS):
        return 8, "8: this CPU has VNNI (int32 accumulation, no int16 saturation)"
    return 7, "7: this CPU has no VNNI (u8×s8 pairs saturate int16 at 8 bits)"
