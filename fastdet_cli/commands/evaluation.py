"""COCO mAP of a model on a dataset (default: the generated val split), per class too; or its agreement mAP with
a reference model (the FP32 model it was made from) on images without labels."""
from __future__ import annotations

from pathlib import Path

import typer

from fastdet_cli.commands import options


def evaluate(
    model: str = options.Model,
    dataset: str = options.Dataset,
    backend: str = options.Backend,
    threads: int = options.Threads,
    device: str = options.Device,
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate only the first N images."),
    json_out: Path = typer.Option(None, "--json", help="Write all figures to this JSON file."),
    reference: str = typer.Option(None, "--reference", help="'fp32' (the FP32 model this INT8 model was made from) "
                                  "or a model: its detections serve as ground truth (agreement mAP, no labels "
                                  "needed); a folder of images is then enough as --dataset."),
) -> int:
    """COCO mAP@[.5:.95], AP50, AP75, AP small/medium/large and per-class AP (or agreement mAP with --reference)."""
    from rich.progress import Progress

    from fastdet_cli.api import evaluate as run
    from fastdet_cli.ui import make_console

    with Progress(transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        ev = run(model, dataset, backend, threads=threads, device=device, limit=limit, reference=reference,
                 json_out=json_out, progress=progress)
    console = make_console()
    for note in ev.notes:
        make_console(stderr=True).print(f"note: {note}", highlight=False, markup=False)
    console.print(_summary_table(ev))
    console.print(_per_class_table(ev))
    return 0


def _summary_table(ev):
    from fastdet_cli.ui import Table

    what = (f"agreement mAP with {ev.reference} (its detections as ground truth)" if ev.reference else
            f"COCO bbox mAP ({ev.dataset.name})")
    table = Table(title=f"{what} — {ev.model} on {ev.backend}, {ev.metrics.images} images", title_justify="left")
    columns = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    for col in columns:
        table.add_column(col, justify="right")
    stats = ev.metrics.stats  # COCO reports -1 for an area range with no ground truth
    table.add_row(*(f"{stats[c]:.3f}" if stats[c] >= 0 else "n/a (none)" for c in columns))
    return table


def _per_class_table(ev):
    from fastdet_cli.ui import Table

    per = Table(title="Per-class " + ("agreement " if ev.reference else "") + "AP@[.5:.95]", title_justify="left")
    per.add_column("class")
    per.add_column("AP", justify="right")
    for name, ap in ev.metrics.per_class.items():
        per.add_row(name, f"{ap:.3f}")
    return per
