"""FP32 vs INT8 you can see: both models on the same images and backend, boxes matched, differences drawn."""
from __future__ import annotations

from pathlib import Path

import typer

from fastdet_cli.commands import options


def diff(
    images: list[Path] = typer.Argument(None, help="Image files or folders (or use --dataset)."),
    model: str = options.Model,
    int8_model: str = typer.Option(None, "--int8-model", help="The quantized model (default: the one "
                                   "`fastdet bench --int8` runs on this backend)."),
    backend: str = options.Backend,
    threads: int = options.Threads,
    device: str = options.Device,
    dataset: str = typer.Option(None, "--dataset", "-d", help="COCO dataset dir or 'default': its images, with "
                                "ground truth drawn."),
    limit: int = typer.Option(None, "--limit", min=1, help="Compare the first N images only."),
    threshold: float = typer.Option(None, "--threshold", "-t", help="Score threshold for both models (default: "
                                    "the deploy config's draw_threshold)."),
    iou: float = typer.Option(0.5, "--iou", help="IoU at which two boxes of the same class match."),
    worst_n: int = typer.Option(6, "--worst", min=1, help="How many least-agreeing images go into montage.png."),
    save_dir: Path = typer.Option(..., "--save-dir", help="Folder for diff.json, per-image PNGs and montage.png."),
) -> int:
    """Per image: boxes both found, boxes INT8 missed, boxes INT8 added; side-by-side PNGs and diff.json."""
    from rich.progress import Progress

    from fastdet_cli import api
    from fastdet_cli.ui import make_console

    console = make_console(own_fd=True)

    def log(message: str) -> None:
        console.print(message, highlight=False, markup=False)

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"FP32 vs INT8 on {backend}", total=None)
        result = api.diff(images or None, model, int8_model, backend, save_dir=save_dir, dataset=dataset, limit=limit,
                          threshold=threshold, iou=iou, worst=worst_n, threads=threads, device=device,
                          library_log=True, log=log,
                          progress=lambda n, total: bar.update(task, completed=n, total=total))
    console.print(_table(result))
    log(f"wrote {save_dir / 'diff.json'}, {len(result.images)} side-by-side PNGs in {save_dir / 'images'} and "
        f"{save_dir / 'montage.png'} (the least-agreeing images)")
    if result.skipped:
        log(f"{len(result.skipped)} image(s) could not be read (listed in diff.json)")
        return 2
    return 0


def _table(result):
    """All images, then the least-agreeing ones."""
    from rich.markup import escape

    from fastdet_cli.ui import Table

    table = Table(title=f"FP32 vs INT8 on {result.backend}, score ≥ {result.threshold:g}, IoU ≥ {result.iou:g} — "
                        f"{result.summary.images} images", title_justify="left")
    for col in ("", "FP32 boxes", "INT8 boxes", "matched", "missed by INT8", "extra in INT8", "mean IoU",
                "mean score change", "agreement"):
        table.add_column(col, justify="left" if not col else "right")

    def cells(d):  # an ImageDiff or the DiffSummary
        return [str(d.fp32), str(d.int8), str(d.matched), str(d.missed), str(d.extra),
                "-" if d.mean_iou is None else f"{d.mean_iou:.3f}",
                "-" if d.mean_score_change is None else f"{d.mean_score_change:+.3f}", f"{d.agreement:.0%}"]

    table.add_row("all images", *cells(result.summary))
    by_name = {d.image: d for d in result.images}
    for name in result.worst:
        table.add_row(escape(Path(name).name), *cells(by_name[name]))
    return table
