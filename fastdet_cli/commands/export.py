"""Export a Paddle inference model to ONNX (NMS cut out, validated against Paddle) or a TensorRT engine."""
from __future__ import annotations

from pathlib import Path

import typer

from fastdet_cli.commands import options


def export(
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (model.onnx, deploy config, fastdet.yml)."),
    model: str = options.Model,
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or trt."),
    remove_nms: bool = options.Flag(True, "--remove-nms/--keep-nms",
                                    help="Cut multiclass NMS out of the graph; post-processing applies it with the "
                                         "model's parameters."),
    fp16: bool = options.Flag(False, "--fp16", help="TensorRT engine with FP16 kernels allowed (--format trt)."),
    int8: bool = options.Flag(False, "--int8", help="INT8: the model must be quantized (fastdet compress)."),
    ort_u8: bool = options.Flag(True, "--ort-u8/--no-ort-u8",
                                help="INT8: move activation Q/DQ to uint8, ONNX Runtime's fast path (same function)."),
    weight_bits: int = typer.Option(None, "--weight-bits", min=7, max=8, show_default="from the CPU",
                                    help="INT8 weight bits: 7 keeps CPUs without VNNI from saturating, 8 for VNNI "
                                    "CPUs and GPUs. Default: 8 where this CPU has VNNI (or for TensorRT), else 7; "
                                    "pass 7 for a model made here and deployed on a CPU without VNNI."),
    shape_range: str = typer.Option(None, "--shape-range", help="TensorRT: input shapes the engine accepts, "
                                    "NAME:MIN:MAX (e.g. image:1x3x320x320:1x3x960x960; comma-separated); the "
                                    "deploy config's size is the optimum. Default: that size only."),
    target: str = typer.Option(None, "--for", help="onnxruntime or tensorrt: the ONNX flavour (default: tensorrt "
                               "with --format trt, else onnxruntime). tensorrt = int8 Q/DQ with zero point 0, 8-bit "
                               "weights, float biases, checked against TensorRT's parser rules."),
) -> int:
    """Export a Paddle inference model; every export is checked against Paddle Inference on the same input."""
    from fastdet_cli.api import export as run
    from fastdet_cli.ui import make_console

    exported = run(output, model, fmt, remove_nms=remove_nms, fp16=fp16, int8=int8, ort_u8=ort_u8,
                   weight_bits=weight_bits, shape_range=shape_range, target=target)
    console = make_console()
    console.print(_table(exported))
    for note in exported.onnx.notes:
        console.print(f"• {note}", highlight=False, markup=False)
    if exported.engine is not None:
        console.print(f"TensorRT engine: {exported.engine}", highlight=False, markup=False)
    return 0


def _table(exported):
    """The export's validation: ONNX vs Paddle Inference per output, or the INT8 check's figures."""
    from fastdet_cli.ui import Table

    result = exported.onnx
    table = Table(title=f"Export {exported.source} → {result.onnx_path}", title_justify="left")
    if result.quantized and result.max_diff:
        table.add_column("INT8 ONNX vs the quantized program (outputs before NMS)")
        table.add_column("measured", justify="right")
        table.add_column("tolerance", justify="right")
        for name, value in result.max_diff.items():
            tol = result.int8_tolerances.get(name)
            limit = "all match" if name == "quantized convolutions" else "" if tol is None else (
                f"≥ {tol:.3g}" if "IoU" in name else f"≤ {tol:.3g}")
            table.add_row(name, f"{value:.0f}" if value == int(value) else f"{value:.3g}", limit)
    else:
        table.add_column("output")
        table.add_column("ONNX vs Paddle Inference", justify="right")
        for name, diff in result.max_diff.items():
            table.add_row(name, _diff_text(name, diff))
    return table


def _diff_text(name: str, value: float) -> str:
    """A validation figure with its unit: the largest difference."""
    if name == "boxes":
        return f"max diff {value:.3g} px"
    if name in ("score", "scores"):
        return f"max score diff {value:.3g}"
    return f"max abs diff {value:.3g}"
