"""INT8 artifacts and which one each backend runs best.

One quantized model does not suit every runtime: ONNX Runtime runs PaddleSlim's export (Q/DQ on convolution
inputs only) in float, but fuses ONNX Runtime's own QDQ graph into integer kernels; Paddle Inference runs only
a Paddle program. `fastdet bench` therefore takes several INT8 artifacts and gives each backend the first kind
in that backend's preference (`BackendSpec.int8_kinds`, measured in docs/performance.md).

Kinds: `paddle-program` (PaddleSlim output: a quantized Paddle program; ONNX backends run its fastdet export),
`ort-qdq` (the onnxruntime engine's ONNX), `onnx-qdq` (any other quantized ONNX).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastdet_cli.errors import FastdetError

KIND_LABELS = {"paddle-program": "PaddleSlim program", "ort-qdq": "ORT-quantized ONNX", "onnx-qdq": "INT8 ONNX"}


@dataclass(frozen=True)
class Int8Artifact:
    path: Path  # the model dir
    kind: str
    method: str  # PTQ, PTQ (ORT), QAT-distillation, INT8 (given)

    def as_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "method": self.method}


def describe(spec: str | Path) -> Int8Artifact:
    """The INT8 artifact at `spec`; an FP32 model is an error (benchmarking it as INT8 would be a lie)."""
    from fastdet_cli.det.model import resolve_model

    source = resolve_model(spec)
    report = source.dir / "compress_report.json"
    method = json.loads(report.read_text()).get("method_label", "INT8") if report.exists() else "INT8 (given)"
    if source.format == "paddle":
        from fastdet_cli.paddle_program import QUANT_OPS, load_program, op_counts
        from fastdet_cli.runtime.paddle import paddle_model_files

        quantized = any(k in op_counts(load_program(paddle_model_files(source.dir)[0])) for k in QUANT_OPS)
        kind = "paddle-program"
    else:
        import onnx

        side = source.sidecar()
        graph = onnx.load(str(source.path), load_external_data=False).graph
        quantized = bool(side.get("quantized")) or any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in graph.node)
        kind = "ort-qdq" if side.get("engine") == "onnxruntime" else "onnx-qdq"
    if not quantized:
        raise FastdetError(f"{source.path} is not a quantized model (no quantize ops): compress it first "
                           "(fastdet compress), or pass it as --model")
    return Int8Artifact(source.dir, kind, method)


def choose(backend: str, artifacts: list[Int8Artifact]) -> Int8Artifact | str:
    """The artifact `backend` runs best among `artifacts`, or 'None: …' when it can run none of them."""
    from fastdet_cli.runtime.registry import get_backend

    prefs = get_backend(backend).int8_kinds
    for kind in prefs:
        for a in artifacts:
            if a.kind == kind:
                return a
    have = ", ".join(sorted({KIND_LABELS[a.kind] for a in artifacts})) or "none"
    want = " or ".join(KIND_LABELS[k] for k in prefs)
    return f"None: {backend} runs a {want}; given: {have}"


def default_artifacts(model_dir: Path, log: Callable[[str], None]) -> list[Int8Artifact]:
    """The embedded model's INT8 versions, made with the shipped configs and cached by the model's content:
    PaddleSlim PTQ (default_ptq.yaml) and ONNX Runtime PTQ (default_ptq_ort.yaml)."""
    from fastdet_cli.compress import compress
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paths import DEFAULT_PTQ_CONFIG, DEFAULT_PTQ_ORT_CONFIG, cache_dir

    key = resolve_model(model_dir).content_hash()[:16]
    out = []
    for config, name, marker in ((DEFAULT_PTQ_CONFIG, "default_ptq", "model.pdmodel"),
                                 (DEFAULT_PTQ_ORT_CONFIG, "default_ptq_ort", "model.onnx")):
        conf = hashlib.sha256(config.read_bytes()).hexdigest()[:8]  # a changed config makes a new artifact
        path = cache_dir() / "compressed" / f"{name}_{key}_{conf}"
        if not (path / marker).exists():
            log(f"making the INT8 model with {config.name} (cached in {path})")
            compress(config, "ptq", path, log=log)
        out.append(describe(path))
    return out
