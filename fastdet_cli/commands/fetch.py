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
    import dataclasses

    from fastdet_cli.ui import make_console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
    from fastdet_cli.ui import Table

    from fastdet_cli.errors import FastdetError
    from fastdet_cli.fetch import ENTRIES, Part, fetch as do_fetch, target_dir

    console = make_console()
    if list_ or name is None:
        table = Table(title="fastdet fetch", title_justify="left")
        for col in ("name", "kind", "what", "cached"):
            table.add_column(col)
        for e in ENTRIES.values():
            table.add_row(e.name, e.kind, e.description, "yes" if target_dir(e.name).exists() else "-")
        console.print(table)
        return 0
    if name not in ENTRIES:
        import difflib

        close = difflib.get_close_matches(name, ENTRIES, n=1)
        raise FastdetError(f"unknown fetch name '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                           + "; see fastdet fetch --list")
    entry = ENTRIES[name]
    if url:
        if len(entry.parts) != 1:
            raise FastdetError(f"--url replaces a single archive; '{name}' has {len(entry.parts)} parts")
        entry = dataclasses.replace(entry, parts=(Part(url),))
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(fname: str, got: int, total: int | None) -> None:
            if fname not in tasks:
                tasks[fname] = bar.add_task(fname, total=total)
            bar.update(tasks[fname], completed=got, total=total)

        path = do_fetch(entry, progress, force=force)
    flag = "--model" if entry.kind == "model" else "--dataset"
    console.print(f"{entry.name}: {path}  (use {flag} {path})", highlight=False, markup=False)
    return 0
