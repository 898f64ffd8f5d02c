"""Detect objects in images with the model's own preprocessing, on any backend."""
from __future__ import annotations

from pathlib import Path

import typer

from fastdet_cli.commands import options


def infer(
    images: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: str = options.Model,
    backend: str = options.Backend,
    threads: int = options.Threads,
    device: str = options.Device,
    threshold: float = typer.Option(None, "--threshold", "-t",
                                    help="Score threshold (default: the deploy config's draw_threshold)."),
    json_out: Path = typer.Option(None, "--json", help="Write detections of all images to this JSON file."),
    save_dir: Path = typer.Option(None, "--save-dir", help="Write images with boxes drawn into this folder."),
) -> int:
    """Detect objects in images: a table per image; JSON and drawn images on request."""
    from rich.markup import escape

    from fastdet_cli.api import detect
    from fastdet_cli.ui import make_console

    console, err = make_console(), make_console(stderr=True)

    def show(result) -> None:
        if result.error is not None:
            err.print(f"[red]skipped:[/] {escape(result.error)}", highlight=False)
        else:
            console.print(_table(result, backend))

    results = detect(images, model, backend, threshold, threads=threads, device=device, save_dir=save_dir,
                     json_out=json_out, log=lambda m: err.print(m, highlight=False, markup=False), on_image=show)
    failures = sum(r.error is not None for r in results)
    if failures:
        err.print(f"[bold red]error:[/] {failures} of {len(results)} inputs could not be read", highlight=False)
        return 2
    return 0


def _table(result, backend: str):
    """One image's boxes."""
    from fastdet_cli.ui import Table

    noun = "object" if len(result.boxes) == 1 else "objects"
    table = Table(title=f"{result.image.name}: {len(result.boxes)} {noun} (score ≥ {result.threshold:g}, {backend}, "
                        f"{result.runtime_ms:.1f} ms runtime)", title_justify="left")
    for col in ("label", "score", "x1", "y1", "x2", "y2"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for b in result.boxes:
        table.add_row(b.label, f"{b.score:.3f}", *(f"{v:.1f}" for v in b.bbox))
    return table
