"""Bench reports: merge the reports of several machines into one table."""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__,
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.command("merge")
def merge(
    inputs: list[Path] = typer.Argument(..., help="report.json files written by `fastdet bench --report`, or the "
                                        "folders holding them."),
    out: Path = typer.Option(..., "--out", help="Folder for the merged report.json/.csv/.md and plot."),
) -> int:
    """One table from bench reports of many machines: a hardware column, versions and settings per row."""
    from fastdet_cli.bench.merge import merge_reports
    from fastdet_cli.bench.report import print_tables, write_report
    from fastdet_cli.outputs import check_output_dir
    from fastdet_cli.ui import make_console

    check_output_dir(out, "--out")
    merged = merge_reports(inputs)
    console = make_console()
    print_tables(merged, console)
    for path in write_report(merged, out):
        console.print(f"wrote {path}", highlight=False, markup=False)
    return 0
