"""Show backends (installed version or not), devices, Python, CPU flags and thread defaults."""
from __future__ import annotations


def env() -> int:
    """Backends, devices, CPU and threads of this machine."""
    from rich.text import Text

    from fastdet_cli import api
    from fastdet_cli.ui import Table, make_console

    found = api.environment()
    backends = Table(title="Backends", title_justify="left")
    for col in ("backend", "library", "version", "pip extra", "devices", "precisions", "status"):
        backends.add_column(col)
    for b in found.backends:
        backends.add_row(b.spec.name, b.spec.module, b.version or "-", b.spec.extra, ",".join(b.spec.devices),
                         ",".join(b.spec.precisions),
                         Text(b.status, style="green" if b.status == "ready" else "yellow"))
    machine = Table(title="Machine", title_justify="left", show_header=False)
    for k, v in found.machine.items():
        machine.add_row(k, Text(v))
    console = make_console()
    console.print(backends)
    console.print(machine)
    return 0
