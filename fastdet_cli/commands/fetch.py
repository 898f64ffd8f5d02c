"""Download real PaddleDetection models and COCO val2017 into the cache (needs a network)."""
from __future__ import annotations

import typer

from fastdet_cli.commands import options


def fetch(
    name: str = typer.Argument(None, help="What to fetch (see --list)."),
    list_: bool = options.Flag(False, "--list", help="List what can be fetched."),
    url: str = typer.Option(None, "--url", help="Download this archive URL instead of the listed one (a mirror)."),
    force: bool = options.Flag(False, "--force", help="Fetch again even if already in the cache."),
) -> int:
    """Download and unpack a model or dataset; prints the folder to pass to --model / --dataset."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from fastdet_cli import api
    from fastdet_cli.ui import make_console

    console = make_console()
    if list_ or name is None:
        console.print(_list_table(api.fetch_list()))
        return 0
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(fname: str, got: int, total: int | None) -> None:
            if fname not in tasks:
                tasks[fname] = bar.add_task(fname, total=total)
            bar.update(tasks[fname], completed=got, total=total)

        got = api.fetch(name, url=url, force=force, progress=progress)
    path, flag = got.path, f"--{got.kind}"
    console.print(f"{name}: {path}  (use {flag} {path})", highlight=False, markup=False)
    return 0


def _list_table(entries):
    """What can be fetched, and whether it is in the cache."""
    from fastdet_cli.ui import Table

    table = Table(title="fastdet fetch", title_justify="left")
    for col in ("name", "kind", "what", "cached"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.name, e.kind, e.description, "yes" if e.cached else "-")
    return table
