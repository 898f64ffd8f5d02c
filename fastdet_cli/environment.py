"""What `fastdet env` shows: every backend (installed version, whether it runs here) and the machine's facts and
the defaults that follow from them."""
from __future__ import annotations

from dataclasses import dataclass

from fastdet_cli.runtime.registry import BackendSpec


@dataclass
class BackendStatus:
    """One backend on this machine (`environment`)."""

    spec: BackendSpec
    version: str | None  # None: not installed
    status: str  # "ready", "not installed", "installed, needs <package>" (e.g. onnxruntime-gpu), "installed, no GPU"


@dataclass
class Environment:
    """`environment`'s result: what `fastdet env` shows."""

    backends: list[BackendStatus]
    machine: dict[str, str]  # Python, CPU, flags, GPUs, GPU libraries, thread and INT8 defaults, in order


def environment() -> Environment:
    """Every backend and this machine's facts (api.environment)."""
    from fastdet_cli.machine import BF16_FLAGS, cpu_has, int8_weight_bits, machine_info
    from fastdet_cli.runtime.registry import BACKENDS, cuda_device_count

    gpus = cuda_device_count()
    rows = []
    for spec in BACKENDS.values():
        version = spec.version() if spec.installed() else None
        rows.append(BackendStatus(spec, version, "not installed" if version is None else _status(spec)))
    machine = {k: str(v) for k, v in machine_info().items()}
    machine["NVIDIA GPUs"] = str(gpus)
    trt = BACKENDS["trt"]
    for label, dists in (("TensorRT", (trt.dist, *trt.other_dists)),
                         ("cuda-bindings", ("cuda-bindings", "cuda-python")),
                         ("Paddle GPU build", ("paddlepaddle-gpu",))):
        machine[label] = _first_version(dists)
    machine["default threads"] = "1 (intra-op, every backend; --threads N)"
    machine["INT8 weight bits here"] = int8_weight_bits()[1]
    machine["BF16 rows in bench"] = ("on: this CPU has bf16 in hardware" if cpu_has(BF16_FLAGS) else
                                     "off: this CPU has no bf16 (AVX512-BF16 or AMX-BF16)")
    return Environment(rows, machine)


def _status(spec: BackendSpec) -> str:
    """An installed backend's status: what BackendSpec.check_can_run says (bench's "skipped" and the commands'
    errors say the same)."""
    from fastdet_cli.errors import MissingDependency, NoDevice

    try:
        spec.check_can_run()
    except MissingDependency as e:
        return f"installed, needs {e.module}"
    except NoDevice:
        return "installed, no GPU"
    return "ready"


def _first_version(dists: tuple[str, ...]) -> str:
    from fastdet_cli.machine import installed_distribution

    found = installed_distribution(dists)
    return " ".join(found) if found else "not installed"
