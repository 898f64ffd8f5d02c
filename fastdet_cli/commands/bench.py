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
    from fastdet_cli.bench.report import print_tables, write_report
    from fastdet_cli.bench.run import BenchSettings
    from fastdet_cli.outputs import check_output_dir
    from fastdet_cli.outcome import RAN
    from fastdet_cli.paths import library_log_path
    from fastdet_cli.ui import make_console

    check_output_dir(report, "--report")
    settings = BenchSettings(model=model, int8_models=tuple(int8_model or ()), compress_config=compress_config,
                             backends=_backend_names(backend), max_map_drop=max_map_drop, int8=int8,
                             fp16=fp16, bf16=bf16, pinned=pinned, repeat=repeat, warmup=warmup, time_limit=time_limit,
                             threads=threads,
                             dataset=dataset, eval=eval_, eval_limit=eval_limit, end2end=end2end)
    console, chatter = make_console(own_fd=True), library_log_path("bench")
    result = _run(settings, console, chatter)
    print_tables(result, console)
    if report is not None:
        for path in write_report(result, report):
            console.print(f"wrote {path}", highlight=False, markup=False)
        if diff_images and result["diff_target"]:
            try:
                _diff_images(result["diff_target"], settings, report / "diff", console, chatter)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # the report is written: a failing extra never turns it into a failed run
                from fastdet_cli.outcome import Outcome

                console.print(f"warning: no FP32 vs INT8 images ({Outcome.of(e).why}); the report in {report} is "
                              "complete", highlight=False, markup=False)
    return 0 if any(r["status"] == RAN for r in result["rows"]) else 1


def _backend_names(backend: str) -> tuple[str, ...]:
    """--backend: comma-separated names, or 'all' (names are checked by run_bench, once)."""
    from fastdet_cli.errors import FastdetError
    from fastdet_cli.runtime.registry import BACKENDS

    names = tuple(BACKENDS) if backend == "all" else tuple(b.strip() for b in backend.split(","))
    if not all(names):
        raise FastdetError(f"--backend '{backend}' has an empty item: give comma-separated backend names, or 'all'")
    return names


def _run(settings, console, chatter: Path) -> dict:
    """run_bench with the libraries' output sent to a log file and fastdet's own progress bar."""
    from rich.progress import Progress

    from fastdet_cli.bench.run import run_bench
    from fastdet_cli.outputs import library_output_to

    console.print(f"library output (Paddle, PaddleSlim, ONNX Runtime, OpenVINO) goes to {chatter}",
                  highlight=False, markup=False)
    with library_output_to(chatter), Progress(console=console, transient=True) as bar:
        def progress(label: str, total: int):
            task = bar.add_task(f"timing {label}", total=total)
            if not console.is_terminal:  # no live bar in a pipe or a CI log: one line per row instead
                console.print(f"timing {label}: {total} runs", highlight=False, markup=False)
            return lambda n: bar.advance(task, n)

        return run_bench(settings, log=lambda m: console.print(m, highlight=False, markup=False), progress=progress)


def _diff_images(target: dict, settings, out: Path, console, chatter: Path) -> None:
    """A few side-by-side FP32 vs INT8 images of the least-agreeing dataset images, beside the report."""
    from fastdet_cli.data.dataset import ImageFolder, resolve_eval_data
    from fastdet_cli.diff import diff_models
    from fastdet_cli.outputs import library_output_to

    backend, int8_model = target["backend"], target["int8_model"]
    data = resolve_eval_data(settings.dataset)  # an image folder (agreement mAP): its images, no ground truth
    limit = min(settings.eval_limit or 50, 50)
    images = data.image_files(limit) if isinstance(data, ImageFolder) else []
    with library_output_to(chatter):
        diff = diff_models(settings.model, int8_model, backend, images, out,
                        dataset=None if isinstance(data, ImageFolder) else data, limit=limit,
                        options=options.runner_options(settings.threads, "cpu"), keep_images=3, montage_size=3,
                        log=lambda m: None)
    s = diff.summary
    console.print(f"FP32 vs INT8 on {backend} ({s.images} images): {s.matched} boxes matched, {s.missed} "
                  f"missed by INT8, {s.extra} extra; the 3 least-agreeing images are in {out}",
                  highlight=False, markup=False)
