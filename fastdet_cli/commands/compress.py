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
    from fastdet_cli.outputs import check_output_dir, library_output_to
    from fastdet_cli.paths import library_log_path
    from fastdet_cli.ui import make_console

    console = make_console(own_fd=True)
    check_output_dir(save_dir, "--save-dir")  # before the log line below (the call checks it again)
    chatter = library_log_path("compress")
    console.print(f"PaddleSlim / Paddle / ONNX Runtime output goes to {chatter}", highlight=False, markup=False)
    with library_output_to(chatter):
        result = run(config, method=method, save_dir=save_dir, devices=devices, eval_dataset=eval_dataset,
                     engine=engine, log=lambda m: console.print(m, highlight=False, markup=False))
    if result.report is None:  # a rank > 0 of a distributed run
        console.print("this rank's part is done; rank 0 writes the output", highlight=False, markup=False)
        return 0
    import json

    forms = result.report.get("forms")
    for target, form in (forms or {None: None}).items():  # a multi-form output: each form's own report
        out = result.output_dir / form["dir"] if form else result.output_dir
        r = json.loads((out / "compress_report.json").read_text()) if form else result.report
        console.print(_report_table(r, out, target))
        if r["map"]:
            console.print(map_table(r["map"]))
    if forms:
        console.print(f"{len(forms)} forms in {result.output_dir} ({', '.join(forms)}): bench, diff, eval, infer and "
                      "inspect given that folder run the form made for their backend", highlight=False, markup=False)
    return 0


def _report_table(r: dict, output_dir: Path, target: str | None = None):
    """compress_report.json's main facts (`target`: the form's deploy target, in a multi-form output)."""
    from rich.markup import escape

    from fastdet_cli.ui import Table

    form = f" (form for {target})" if target else ""
    table = Table(title=escape(f"{r['method_label']}{form} → {output_dir}"), title_justify="left", show_header=False)
    table.add_row("images", f"{r['images']['count']} from {r['images']['source']}")
    table.add_row("preprocess", r["preprocess"])
    table.add_row("kept in float", ", ".join(r["kept_float"]) or "-")
    table.add_row("size FP32 → INT8 program",
                  f"{r['size_bytes']['fp32'] / 1e6:.2f} MB → {r['size_bytes']['int8'] / 1e6:.2f} MB")
    table.add_row("time", f"{r['seconds']:.1f} s")
    table.add_row("deploy config", f"{r['deploy_config']} (copied unchanged)")
    if r.get("distributed"):
        d = r["distributed"]
        table.add_row("distributed", f"{d['world_size']} processes, images per rank {d['images_per_rank']}; "
                                     f"weights identical across ranks: {d.get('weights_identical_across_ranks', '-')}")
    return table


def map_table(m: dict):
    """compress_report.json's mAP record as a table."""
    from fastdet_cli.ui import Table

    table = Table(title=f"{m.get('metric', 'COCO mAP')} on {Path(m['dataset']).name} ({m['runtime']}, CPU)",
                  title_justify="left")
    for col in ("model", "AP", "AP50", "AP75"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name in ("fp32", "int8"):
        stats = m[name]
        table.add_row(name.upper(), f"{stats['AP']:.3f}", f"{stats['AP50']:.3f}", f"{stats['AP75']:.3f}")
    return table
