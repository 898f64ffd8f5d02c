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
    version = Path("/proc/driver/nvidia/version")
    driver = None
    if version.is_file():
        words = version.read_text(errors="replace").split()
        driver = next((w for w in words if w.count(".") >= 1 and w.replace(".", "").isdigit()), None)
    return names, driver


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
