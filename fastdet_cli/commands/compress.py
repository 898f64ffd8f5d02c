"""Quantize a PaddleDetection model (Paddle or ONNX) from one YAML config: PaddleSlim PTQ or QAT with
distillation, or ONNX Runtime PTQ."""
from __future__ import annotations

from pathlib import Path

import typer


def compress(
    config: Path = typer.Argument(..., help="Auto-compression YAML (FastDeploy's format; see configs/)."),
    method: str = typer.Option(None, "--method", help="ptq or qat (default: what the config describes)."),
    save_dir: Path = typer.Option(None, "--save-dir", help="Output folder (default: ./<config name>, "
                                  "with _<method> added when the name does not say it)."),
    devices: str = typer.Option("cpu", "--devices", help="cpu or gpu."),
    eval_dataset: str = typer.Option(None, "--eval", help="COCO dataset dir, a folder of images (agreement mAP "
                                                          "with the FP32 model), or 'default': mAP FP32 vs INT8."),
    engine: str = typer.Option(None, "--engine", help="paddleslim or onnxruntime (default: Global.engine, else "
                                                      "onnxruntime for ONNX models, paddleslim for Paddle ones)."),
) -> int:
    """Quantize: quantized model + the FP32 deploy config copied + compress_report.json; optional mAP table."""
    from fastdet_cli.api import compress as run
    from fastdet_cli.ui import make_console

    console = make_console(own_fd=True)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    result = run(config, method=method, save_dir=save_dir, devices=devices, eval_dataset=eval_dataset, engine=engine,
                 library_log=True, log=say)
    if result.report is None:  # a rank > 0 of a distributed run
        say("this rank's part is done; rank 0 writes the output")
        return 0
    for target, folder, report in result.models():  # a multi-form output: each form's own report
        console.print(_report_table(report, folder, target))
        if report.map:
            console.print(map_table(report.map))
    if result.form_reports:
        say(f"{len(result.form_reports)} forms in {result.output_dir} ({', '.join(result.form_reports)}): bench, diff, "
            "eval, infer and inspect given that folder run the form made for their backend")
    return 0


def _report_table(r, output_dir: Path, target: str | None = None):
    """A `CompressReport`'s main facts (`target`: the form's deploy target, in a multi-form output)."""
    from rich.markup import escape

    from fastdet_cli.ui import Table

    form = f" (form for {target})" if target else ""
    table = Table(title=escape(f"{r.method_label}{form} → {output_dir}"), title_justify="left", show_header=False)
    held = len(r.config_resolved.get("holdout_images") or [])  # QAT: checked on, never trained on
    table.add_row("images", f"{r.images.count} from {r.images.source}"
                  + (f" (+{held} held back for the agreement check)" if held else ""))
    table.add_row("preprocess", r.preprocess)
    table.add_row("kept in float", ", ".join(r.kept_float) or "-")
    table.add_row("size FP32 → INT8 program", f"{r.size_bytes.fp32 / 1e6:.2f} MB → {r.size_bytes.int8 / 1e6:.2f} MB")
    table.add_row("time", f"{r.seconds:.1f} s")
    table.add_row("deploy config", f"{r.deploy_config} (copied unchanged)")
    qat = r.config_resolved.get("qat")  # engine onnxruntime's QAT: the epoch written and what it measured
    if qat:
        kept = next(h for h in qat["history"] if h["epoch"] == qat["chosen_epoch"])
        start = qat["history"][0]
        shown = "-" if kept["agreement"] is None else f"{kept['agreement']:.3f}"
        table.add_row("QAT", f"epoch {kept['epoch']} of {len(qat['history']) - 1} written"
                      + (" (the PTQ model: no epoch measured better)" if kept["epoch"] == 0 else "")
                      + f"; held-back agreement {shown}"
                      + ("" if start["agreement"] is None else f" (PTQ {start['agreement']:.3f})"))
    if r.distributed:
        d = r.distributed
        same = "-" if d.weights_identical is None else d.weights_identical
        table.add_row("distributed", f"{d.world_size} processes, images per rank {d.images_per_rank}; "
                                     f"weights identical across ranks: {same}")
    return table


def map_table(m):
    """A `CompressReport`'s mAP record (`MapComparison`) as a table."""
    from fastdet_cli.ui import Table

    table = Table(title=f"{m.metric} on {Path(m.dataset).name} ({m.runtime}, CPU)", title_justify="left")
    for col in ("model", "AP", "AP50", "AP75"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, stats in (("FP32", m.fp32), ("INT8", m.int8)):
        table.add_row(name, f"{stats.ap:.3f}", f"{stats.ap50:.3f}", f"{stats.ap75:.3f}")
    return table
