"""What a runtime really executes for a model: INT8 vs float ops, quantize/dequantize steps left, the
slowest ops, and why INT8 is (not) faster."""
from __future__ import annotations

from pathlib import Path

import typer

from fastdet_cli.commands import options


def inspect(
    model: str = options.Model,
    backend: str = options.Backend,
    threads: int = options.Threads,
    runs: int = typer.Option(50, "--runs", min=1, help="Profiled runs (after 5 warm-up runs)."),
    top: int = typer.Option(10, "--top", min=1, help="How many of the slowest ops to list."),
    json_out: Path = typer.Option(None, "--json", help="Write every op's time and the verdict to this file."),
    int8: bool = options.Flag(False, "--int8", help="Inspect the INT8 model `fastdet bench --int8` runs on this "
                                                    "backend (for the embedded model: its cached PTQ version)."),
) -> int:
    """Per-op profile on ort or openvino: ops by precision, the slowest ops, and a verdict for INT8 models."""
    from fastdet_cli import api
    from fastdet_cli.ui import make_console

    console = make_console()
    result = api.inspect(model, backend, threads=threads, runs=runs, int8=int8, json_out=json_out,
                         log=lambda m: console.print(m, highlight=False, markup=False))
    render(result, console, top)
    return 0


def render(result, console, top: int) -> None:
    """The op-type table, the summary lines, the slowest ops and the verdict."""
    from rich.markup import escape

    from fastdet_cli.ui import Table

    total = result.total_ms or 1e-9
    head = Table(title=f"{escape(result.model)} on {result.backend} — {'INT8' if result.quantized else 'FP32'} model, "
                       f"{result.threads} thread(s), mean of {result.runs} profiled runs: {result.total_ms:.2f} ms "
                       "in ops", title_justify="left")
    for col in ("op type", "precision", "ops", "ms", "share"):
        head.add_column(col, justify="left" if col in ("op type", "precision") else "right")
    for op_type, precision, n, ms in result.by_type():
        head.add_row(op_type, precision, str(n), f"{ms:.3f}", f"{100 * ms / total:.1f}%")
    console.print(head)
    int8_convs, float_convs = result.convs()
    summary = ", ".join(f"{p} {n} ops {100 * ms / total:.0f}%" for p, (n, ms) in result.by_precision().items())
    console.print(f"convolutions: {int8_convs} INT8, {float_convs} float; by precision: {summary}", highlight=False)
    if result.kernels:
        console.print(f"kernels: {result.kernels.summary()}; CPU flags: {' '.join(result.cpu_flags) or '-'}",
                      highlight=False, markup=False)
    g = result.optimized_graph
    if g is not None:
        kinds = ", ".join(f"{t} {n}" for t, n in g["float_between_int8_types"].items())
        console.print(f"optimized graph: {g['float_between_int8']} float op(s) between quantized ops"
                      + (f" ({kinds})" if kinds else " (every INT8 chain stays integer)"),
                      highlight=False, markup=False)
    slow = Table(title=f"{top} slowest ops", title_justify="left")
    for col in ("op", "type", "precision", "ms"):
        slow.add_column(col, justify="right" if col == "ms" else "left")
    for o in result.ops[:top]:
        slow.add_row(escape(o.name), escape(o.op_type), o.precision, f"{o.ms:.3f}")
    console.print(slow)
    for line in result.verdict():
        console.print(f"[bold]verdict:[/bold] {escape(line)}", highlight=False)
