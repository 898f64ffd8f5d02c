"""Quantize a PaddleDetection model with PaddleSlim (PTQ or QAT with distillation) from one YAML config."""
from __future__ import annotations

from pathlib import Path

import typer


def compress(
    config: Path = typer.Argument(..., help="Auto-compression YAML (FastDeploy's format; see configs/)."),
    method: str = typer.Option(None, "--method", help="ptq or qat (default: what the config describes)."),
    save_dir: Path = typer.Option(None, "--save-dir", help="Output folder (default: beside the config)."),
    devices: str = typer.Option("cpu", "--devices", help="cpu or gpu."),
    eval_dataset: str = typer.Option(None, "--eval", help="COCO dataset dir or 'default': mAP FP32 vs INT8."),
    engine: str = typer.Option(None, "--engine", help="paddleslim or onnxruntime (default: Global.engine, "
                                                      "else paddleslim)."),
) -> int:
    """Quantize: quantized model + the FP32 deploy config copied + compress_report.json; optional mAP table."""
    from fastdet_cli.ui import Table, make_console

    from fastdet_cli.compress import compress as run
    from fastdet_cli.io import check_output_dir, library_output_to
    from fastdet_cli.paths import library_log_path

    console = make_console(own_fd=True)
    check_output_dir(save_dir, "--save-dir")
    chatter = library_log_path("compress")
    console.print(f"PaddleSlim / Paddle / ONNX Runtime output goes to {chatter}", highlight=False, markup=False)
    with library_output_to(chatter):
        result = run(config, method, save_dir, devices, eval_dataset,
                     log=lambda m: console.print(m, highlight=False, markup=False), engine=engine)
    r = result.report
    table = Table(title=f"{r['method_label']} → {result.output_dir}", title_justify="left", show_header=False)
    table.add_row("images", f"{r['images']['count']} from {r['images']['source']}")
    table.add_row("preprocess", r["preprocess"])
    table.add_row("kept in float", ", ".join(r["kept_float"]) or "-")
    table.add_row("size FP32 → INT8 program", f"{r['size_bytes']['fp32'] / 1e6:.2f} MB → {r['size_bytes']['int8'] / 1e6:.2f} MB")
    table.add_row("time", f"{r['seconds']:.1f} s")
    table.add_row("deploy config", f"{r['deploy_config']} (copied unchanged)")
    console.print(table)
    spec = eval_dataset or _config_eval(config)
    if spec:
        with library_output_to(chatter):
            _print_map(console, r["model_fp32"], str(result.output_dir), spec,
                       "ort" if r["format"] == "onnx" else "paddle")
    return 0


def _config_eval(config: Path) -> str | None:
    from fastdet_cli.compress.config import load_compress_config

    return load_compress_config(config).eval_dataset


def _print_map(console, fp32: str, int8: str, dataset: str, backend: str) -> None:
    """mAP of FP32 and INT8 on the runtime the quantized model is made for (Paddle Inference for a PaddleSlim
    program, ONNX Runtime for the onnxruntime engine's ONNX)."""
    from fastdet_cli.ui import Table

    from fastdet_cli.data.dataset import resolve_dataset
    from fastdet_cli.det.pipeline import Detector
    from fastdet_cli.evaluate.coco import coco_evaluate

    ds = resolve_dataset(dataset)
    label = {"paddle": "Paddle Inference", "ort": "ONNX Runtime"}[backend]
    table = Table(title=f"COCO mAP on {ds.ann_file.name} ({label}, CPU)", title_justify="left")
    for col in ("model", "AP", "AP50", "AP75"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, path in (("FP32", fp32), ("INT8", int8)):
        with Detector.load(path, backend) as det:
            res = coco_evaluate(det, ds)
        table.add_row(name, f"{res.stats['AP']:.3f}", f"{res.stats['AP50']:.3f}", f"{res.stats['AP75']:.3f}")
    console.print(table)
