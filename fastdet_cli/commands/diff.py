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
    from rich.markup import escape
    from rich.progress import Progress

    from fastdet_cli.det.preprocess import expand_inputs
    from fastdet_cli.diff import run_diff
    from fastdet_cli.errors import FastdetError
    from fastdet_cli.io import check_output_dir, library_output_to
    from fastdet_cli.paths import library_log_path
    from fastdet_cli.ui import Table, make_console

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise FastdetError(f"--threshold must be a score between 0 and 1, got {threshold:g}")
    if not 0.0 < iou <= 1.0:
        raise FastdetError(f"--iou must be in (0, 1], got {iou:g}")
    if bool(images) == bool(dataset):
        raise FastdetError("give images or --dataset (one of the two)")
    check_output_dir(save_dir, "--save-dir")
    ds, files = None, []
    if dataset:
        from fastdet_cli.data.dataset import resolve_dataset

        ds = resolve_dataset(dataset)
    else:
        files = expand_inputs(images)
        if not files:
            raise FastdetError("no images given (folders had no image files)")
    console = make_console(own_fd=True)
    chatter = library_log_path("diff")
    with library_output_to(chatter):
        if int8_model is None:
            if model != "default":
                raise FastdetError("--int8-model is needed for a model other than 'default'")
            from fastdet_cli.inspect import int8_model_for

            int8_model = int8_model_for(model, backend, log=lambda m: console.print(m, highlight=False, markup=False))
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"FP32 vs INT8 on {backend}", total=None)
            result = run_diff(model, int8_model, backend, files, save_dir, dataset=ds, limit=limit,
                              threshold=threshold, iou_min=iou, options=options.runner_options(threads, device),
                              montage_size=worst_n,
                              progress=lambda n, total: bar.update(task, completed=n, total=total),
                              log=lambda m: console.print(m, highlight=False, markup=False))
    s = result["summary"]
    table = Table(title=f"FP32 vs INT8 on {backend}, score ≥ {result['threshold']:g}, IoU ≥ {iou:g} — "
                        f"{s['images']} images", title_justify="left")
    for col in ("", "FP32 boxes", "INT8 boxes", "matched", "missed by INT8", "extra in INT8", "mean IoU",
                "mean score change", "agreement"):
        table.add_column(col, justify="left" if not col else "right")

    def cells(d):
        return [str(d["fp32"]), str(d["int8"]), str(d["matched"]), str(d["missed"]), str(d["extra"]),
                "-" if d["mean_iou"] is None else f"{d['mean_iou']:.3f}",
                "-" if d["mean_score_change"] is None else f"{d['mean_score_change']:+.3f}", f"{d['agreement']:.0%}"]

    table.add_row("all images", *cells(s))
    by_name = {d["image"]: d for d in result["images"]}
    for name in result["worst"]:
        table.add_row(escape(Path(name).name), *cells(by_name[name]))
    console.print(table)
    console.print(f"wrote {save_dir / 'diff.json'}, {len(result['images'])} side-by-side PNGs in "
                  f"{save_dir / 'images'} and {save_dir / 'montage.png'} (the least-agreeing images)",
                  highlight=False, markup=False)
    if result["skipped"]:
        console.print(f"{len(result['skipped'])} image(s) could not be read (listed in diff.json)",
                      highlight=False, markup=False)
        return 2
    return 0
