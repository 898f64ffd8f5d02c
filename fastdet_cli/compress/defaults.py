"""The embedded model's INT8 versions, made once with the shipped configs and cached by content: what `bench`
and `inspect --int8` use when no INT8 model is given."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from fastdet_cli.artifacts import Int8Artifact, describe
from fastdet_cli.det.model import resolve_model
from fastdet_cli.paths import DEFAULT_PTQ_CONFIG, DEFAULT_PTQ_ORT_CONFIG, cache_dir


def default_artifacts(model_dir: Path, log: Callable[[str], None],
                      only: tuple[str, ...] | None = None) -> list[Int8Artifact]:
    """The embedded model's INT8 versions, made with the shipped configs and cached by the model's content:
    PaddleSlim PTQ (default_ptq.yaml) and ONNX Runtime PTQ (default_ptq_ort.yaml); `only`: these names."""
    from fastdet_cli.compress import compress

    key = resolve_model(model_dir).content_hash()[:16]
    out = []
    for config, name, marker in ((DEFAULT_PTQ_CONFIG, "default_ptq", "model.pdmodel"),
                                 (DEFAULT_PTQ_ORT_CONFIG, "default_ptq_ort", "model.onnx")):
        if only is not None and name not in only:
            continue
        conf = hashlib.sha256(config.read_bytes()).hexdigest()[:8]  # a changed config makes a new artifact
        path = cache_dir() / "compressed" / f"{name}_{key}_{conf}"
        if not (path / marker).exists():
            log(f"making the INT8 model with {config.name} (cached in {path})")
            compress(config, "ptq", path, log=log)
        out.append(describe(path))
    return out
