"""ONNX → TensorRT engine, through the `trt` runner (the same build and cache code `infer`/`bench` use)."""
from __future__ import annotations

from pathlib import Path

from fastdet_cli.lazy import require
from fastdet_cli.runtime.registry import require_gpu


def check_trt_available() -> None:
    """Fail early, before any export work, when TensorRT or a GPU is missing."""
    require("tensorrt", "trt", "--format trt")
    require_gpu("--format trt")


def build_engine(onnx_path: Path, precision: str) -> Path:
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.tensorrt import TrtRunner, engine_cache_path

    runner = TrtRunner(onnx_path, RunnerOptions(device="gpu", precision=precision, cache_dir=onnx_path.parent))
    with runner:
        shapes = runner._static_input_shapes()
    return engine_cache_path(onnx_path, precision, shapes, onnx_path.parent)
