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
    from fastdet_cli import api
    from fastdet_cli.render.bench import print_tables
    from fastdet_cli.ui import make_console

    merged = api.merge_reports(inputs, out)
    console = make_console()
    print_tables(merged, console)
    for path in merged.files:
        console.print(f"wrote {path}", highlight=False, markup=False)
    return 0
