"""ONNX → TensorRT engine, through the `trt` runner (the same build and cache code `infer`/`bench` use)."""
from __future__ import annotations

from pathlib import Path

from fastdet_cli.lazy import require
from fastdet_cli.runtime.registry import require_gpu


def check_trt_available() -> None:
    """Fail early, before any export work, when TensorRT or a GPU is missing."""
    require("tensorrt", "trt", "--format trt")
    require_gpu("--format trt")


def parse_shape_range(text: str) -> dict[str, tuple[tuple, tuple]]:
    """`NAME:MIN:MAX` with shapes as `1x3x320x320` (comma-separated for several inputs) → {name: (min, max)}."""
    from fastdet_cli.errors import FastdetError

    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        parts = item.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            low, high = (tuple(int(d) for d in p.lower().split("x")) for p in parts[1:])
        except ValueError:
            raise FastdetError(f"--shape-range '{item}': expected NAME:MIN:MAX, e.g. image:1x3x320x320:1x3x960x960") \
                from None
        if len(low) != len(high) or any(a > b or a < 1 for a, b in zip(low, high)):
            raise FastdetError(f"--shape-range '{item}': MIN and MAX must have the same rank and MIN ≤ MAX")
        out[parts[0]] = (low, high)
    return out


def build_engine(onnx_path: Path, precision: str, fp16: bool = False, input_shapes: dict | None = None,
                 shape_ranges: dict | None = None) -> Path:
    """Build (or find in the cache beside the ONNX) the engine, as the `trt` runner does; return its path."""
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    opts = RunnerOptions(device="gpu", precision=precision, fp16=fp16, cache_dir=onnx_path.parent,
                        input_shapes=input_shapes or {}, shape_ranges=shape_ranges or {})
    with create_runner("trt", onnx_path, opts) as runner:
        return runner.engine_path
