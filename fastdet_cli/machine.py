"""Facts about the machine that a benchmark or `fastdet env` records."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


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


def machine_info() -> dict[str, str]:
    model, flags = cpu_model_and_flags()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": model,
        "cpu cores": str(os.cpu_count()),
        "cpu flags": " ".join(flags) or "-",
    }
