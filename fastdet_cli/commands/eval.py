"""COCO mAP of a model on a dataset (default: the generated val split), per class too."""
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
) -> int:
    """COCO mAP@[.5:.95], AP50, AP75, AP small/medium/large and per-class AP."""
    from fastdet_cli.ui import make_console
    from rich.progress import Progress
    from fastdet_cli.ui import Table

    from fastdet_cli.data.dataset import resolve_dataset
    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.io import check_output_file, write_json_atomic

    check_output_file(json_out, "--json")
    ds = resolve_dataset(dataset)
    with detector(model, backend, options.runner_options(threads, device)) as det:
        with Progress(transient=True) as bar:
            task = bar.add_task(f"evaluating on {backend}", total=None)
            result = coco_evaluate(det, ds, limit, lambda n, total: bar.update(task, completed=n, total=total))
        source = "default (the embedded model)" if model == "default" else str(det.source.path)
    console = make_console()
    table = Table(title=f"COCO bbox mAP — {source} on {backend}, {result.images} images ({ds.ann_file.name})",
                  title_justify="left")
    for col in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"):
        table.add_column(col, justify="right")
    # COCO reports -1 for an area range with no ground truth
    table.add_row(*(f"{result.stats[c]:.3f}" if result.stats[c] >= 0 else "n/a (none)"
                    for c in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")))
    console.print(table)
    per = Table(title="Per-class AP@[.5:.95]", title_justify="left")
    per.add_column("class")
    per.add_column("AP", justify="right")
    for name, ap in result.per_class.items():
        per.add_row(name, f"{ap:.3f}")
    console.print(per)
    if json_out is not None:
        write_json_atomic(json_out, {"model": source, "backend": backend, "dataset": str(ds.ann_file),
                                     **result.as_dict()})
    return 0
