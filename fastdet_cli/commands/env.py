"""Show backends (installed version or not), devices, Python, CPU flags and thread defaults."""
from __future__ import annotations


def env() -> int:
    """Backends, devices, CPU and threads of this machine."""
    from fastdet_cli.runtime.registry import cuda_device_count
    from fastdet_cli.ui import make_console

    console = make_console()
    gpus = cuda_device_count()
    console.print(_backends_table(gpus))
    console.print(_machine_table(gpus))
    return 0


def _backends_table(gpus: int):
    """Every backend: its library, version, pip extra, devices, precisions and whether it runs here."""
    from rich.text import Text

    from fastdet_cli.runtime.registry import BACKENDS
    from fastdet_cli.ui import Table

    table = Table(title="Backends", title_justify="left")
    for col in ("backend", "library", "version", "pip extra", "devices", "precisions", "status"):
        table.add_column(col)
    for spec in BACKENDS.values():
        version = spec.version() if spec.installed() else None
        if version is None:
            status = Text("not installed", style="yellow")
        elif "cpu" not in spec.devices and gpus == 0:
            status = Text("installed, no GPU", style="yellow")
        else:
            status = Text("ready", style="green")
        table.add_row(spec.name, spec.module, version or "-", spec.extra, ",".join(spec.devices),
                      ",".join(spec.precisions), status)
    return table


def _machine_table(gpus: int):
    """Python, CPU and its flags, GPUs, GPU libraries and the thread and INT8 defaults that follow."""
    from fastdet_cli.machine import BF16_FLAGS, cpu_has, int8_weight_bits, machine_info
    from fastdet_cli.ui import Table

    m = Table(title="Machine", title_justify="left", show_header=False)
    for k, v in machine_info().items():
        m.add_row(k, str(v))
    m.add_row("NVIDIA GPUs", str(gpus))
    from fastdet_cli.runtime.registry import BACKENDS

    trt = BACKENDS["trt"]
    for label, dists in (("TensorRT", (trt.dist, *trt.other_dists)),
                         ("cuda-bindings", ("cuda-bindings", "cuda-python")),
                         ("Paddle GPU build", ("paddlepaddle-gpu",))):
        m.add_row(label, _first_version(dists))
    m.add_row("default threads", "1 (intra-op, every backend; --threads N)")
    m.add_row("INT8 weight bits here", int8_weight_bits()[1])
    m.add_row("BF16 rows in bench", "on: this CPU has bf16 in hardware" if cpu_has(BF16_FLAGS) else
              "off: this CPU has no bf16 (AVX512-BF16 or AMX-BF16)")
    return m


def _first_version(dists: tuple[str, ...]) -> str:
    import importlib.metadata as md

    for d in dists:
        try:
            return f"{d} {md.version(d)}"
        except md.PackageNotFoundError:
            continue
    return "not installed"
