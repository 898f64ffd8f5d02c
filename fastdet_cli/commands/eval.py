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
    from fastdet_cli.ui import make_console
    from rich.progress import Progress
    from fastdet_cli.ui import Table

    from fastdet_cli.data.dataset import resolve_dataset
    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.io import check_output_file, write_json_atomic

    check_output_file(json_out, "--json")
    opts = options.runner_options(threads, device)
    if reference is None:
        ds = resolve_dataset(dataset)
    else:
        from fastdet_cli.agreement import fp32_of, with_reference
        from fastdet_cli.data.dataset import resolve_eval_data

        ref = fp32_of(model) if reference == "fp32" else reference
        with Progress(transient=True) as bar:
            task = bar.add_task(f"reference detections ({ref}) on {backend}", total=None)
            ds = with_reference(resolve_eval_data(dataset), ref, backend, opts, limit,
                                lambda n, total: bar.update(task, completed=n, total=total))
    with detector(model, backend, opts) as det:
        with Progress(transient=True) as bar:
            task = bar.add_task(f"evaluating on {backend}", total=None)
            result = coco_evaluate(det, ds, limit, lambda n, total: bar.update(task, completed=n, total=total))
        source = "default (the embedded model)" if model == "default" else str(det.source.path)
    console = make_console()
    for note in det.notes:
        make_console(stderr=True).print(f"note: {note}", highlight=False, markup=False)
    what = (f"agreement mAP with {ds.reference} (its detections as ground truth)" if ds.reference else
            f"COCO bbox mAP ({ds.ann_file.name})")
    table = Table(title=f"{what} — {source} on {backend}, {result.images} images", title_justify="left")
    for col in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"):
        table.add_column(col, justify="right")
    # COCO reports -1 for an area range with no ground truth
    table.add_row(*(f"{result.stats[c]:.3f}" if result.stats[c] >= 0 else "n/a (none)"
                    for c in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")))
    console.print(table)
    per = Table(title="Per-class " + ("agreement " if ds.reference else "") + "AP@[.5:.95]", title_justify="left")
    per.add_column("class")
    per.add_column("AP", justify="right")
    for name, ap in result.per_class.items():
        per.add_row(name, f"{ap:.3f}")
    console.print(per)
    if json_out is not None:
        write_json_atomic(json_out, {"model": source, "backend": backend, "dataset": str(ds.ann_file),
                                     "metric": "agreement" if ds.reference else "coco", "reference": ds.reference,
                                     **result.as_dict()})
    return 0
