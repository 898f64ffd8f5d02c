"""ONNX → TensorRT engine, through the `trt` runner (the same build and cache code `infer`/`bench` use)."""
from __future__ import annotations

from pathlib import Path

from fastdet_cli.lazy import require
from fastdet_cli.runtime.registry import require_gpu


def check_trt_available() -> None:
    """Fail early, before any export work, when TensorRT or a GPU is missing."""
    require("tensorrt", "trt", "--format trt")
    require_gpu("--format trt")


def build_engine(onnx_path: Path, precision: str, fp16: bool = False, input_shapes: dict | None = None) -> Path:
    """Build (or find in the cache beside the ONNX) the engine, as the `trt` runner does; return its path."""
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    opts = RunnerOptions(device="gpu", precision=precision, fp16=fp16, cache_dir=onnx_path.parent,
                        input_shapes=input_shapes or {})
    with create_runner("trt", onnx_path, opts) as runner:
        return runner.engine_path
