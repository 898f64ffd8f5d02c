"""Runtime and end-to-end latency tables, FP32 vs INT8, with COCO mAP on the same backend."""
from __future__ import annotations

from pathlib import Path

import typer

from fastdet_cli.commands import options


def bench(
    model: str = options.Model,
    int8_model: list[str] = typer.Option(None, "--int8-model", help="Quantized model (fastdet compress output); "
                                         "repeat it to give several: each backend runs the one it runs best."),
    compress_config: Path = typer.Option(None, "--compress", help="Make the INT8 model with this compression config."),
    backend: str = typer.Option("ort,openvino,paddle", "--backend", "-b",
                                help="Comma-separated backends, or 'all' (GPU ones get a 'skipped' row here)."),
    int8: bool = options.Flag(True, "--int8/--no-int8", help="Benchmark the INT8 model too."),
    fp16: bool = options.Flag(False, "--fp16", help="Add the INT8+FP16 column (on a CPU: INT8 with the float "
                              "parts in BF16, where the CPU has it)."),
    bf16: bool = typer.Option(None, "--bf16/--no-bf16", show_default="where the CPU has BF16",
                              help="Add the BF16 row: the FP32 model with bf16 arithmetic (no calibration). "
                              "Default: on where the CPU has AVX512-BF16 or AMX-BF16."),
    pinned: bool = options.Flag(False, "--pinned", help="Add the INT8+FP16+pinned-memory column."),
    repeat: int = typer.Option(1000, "--repeat", min=1, help="Timed runs (after warm-up)."),
    warmup: int = typer.Option(200, "--warmup", min=0, help="Untimed warm-up runs."),
    time_limit: float = typer.Option(None, "--time", min=0.1,
                                     help="Seconds per timed loop: each row stops after --repeat runs or this "
                                          "long, whichever comes first (warm-up: --warmup runs or a fifth of it); "
                                          "the report says which bound ended each row. For big models."),
    threads: int = options.Threads,
    dataset: str = options.Dataset,
    eval_: bool = options.Flag(True, "--eval/--no-eval", help="COCO mAP of FP32 and INT8 on each backend."),
    eval_limit: int = typer.Option(None, "--eval-limit", min=1, help="Evaluate on the first N images only."),
    report: Path = typer.Option(None, "--report", help="Write report.json/.csv/.md and a PNG plot here."),
    end2end: bool = options.Flag(True, "--end2end/--no-end2end", help="Also time image-in → boxes-out."),
    max_map_drop: float = typer.Option(0.5, "--max-map-drop", min=0.0,
                                       help="mAP points an INT8 row may lose and still be recommended."),
    diff_images: bool = options.Flag(True, "--diff-images/--no-diff-images",
                                     help="With --report: side-by-side FP32 vs INT8 images of the least-agreeing "
                                          "dataset images (fastdet diff)."),
) -> int:
    """Latency (runtime and end-to-end) and mAP for FP32 / BF16 / INT8 / INT8+FP16 / INT8+FP16+PM per backend.
    A backend that cannot run here gets "skipped" rows (exit 0); the exit code is 1 when no row ran at all."""
    from fastdet_cli.render.bench import print_tables
    from fastdet_cli.ui import make_console

    console = make_console(own_fd=True)
    result = _run(console, report_dir=report, diff_images=diff_images, library_log=True, model=model,
                  int8_models=tuple(int8_model or ()), compress_config=compress_config, backends=backend,
                  max_map_drop=max_map_drop, int8=int8, fp16=fp16, bf16=bf16, pinned=pinned, repeat=repeat,
                  warmup=warmup, time_limit=time_limit, threads=threads, dataset=dataset, eval=eval_,
                  eval_limit=eval_limit, end2end=end2end)
    print_tables(result, console)
    for path in result.files:
        console.print(f"wrote {path}", highlight=False, markup=False)
    return 0 if any(r.ok for r in result.rows) else 1


def _run(console, **kwargs):
    """api.bench with fastdet's own progress bar (one line per row where there is no live bar)."""
    from rich.progress import Progress

    from fastdet_cli import api

    with Progress(console=console, transient=True) as bar:
        def progress(label: str, total: int):
            task = bar.add_task(f"timing {label}", total=total)
            if not console.is_terminal:  # no live bar in a pipe or a CI log: one line per row instead
                console.print(f"timing {label}: {total} runs", highlight=False, markup=False)
            return lambda n: bar.advance(task, n)

        return api.bench(log=lambda m: console.print(m, highlight=False, markup=False), progress=progress, **kwargs)
