"""The embedded model's INT8 versions, made once with the shipped configs and cached by content, and `int8_for`,
the one answer to "which INT8 model runs on this backend" (bench's INT8 rows choose with the same rule,
artifacts.choose; diff, inspect --int8 and every command given a compress folder)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from collections.abc import Callable

from fastdet_cli.artifacts import Int8Artifact, choose, describe, describe_all
from fastdet_cli.det.model import resolve_model
from fastdet_cli.errors import FastdetError
from fastdet_cli.paths import DEFAULT_MODEL_DIR, DEFAULT_PTQ_CONFIG, DEFAULT_PTQ_ORT_CONFIG, cache_dir
from fastdet_cli.runtime.registry import BackendSpec

ARTIFACT_VERSION = 3  # bumped when an engine writes a different model for the same config (2: integer hard-
# sigmoid; 3: the search keeps going for the budget when INT8 stops being faster, timed against the best FP32)


def default_artifacts(model_dir: Path, log: Callable[[str], None],
                      only: tuple[str, ...] | None = None) -> list[Int8Artifact]:
    """The embedded model's INT8 versions, made with the shipped configs and cached by the model's content, the
    config and the CPU kind: PaddleSlim PTQ (default_ptq.yaml) and ONNX Runtime PTQ (default_ptq_ort.yaml);
    `only`: these names."""
    from fastdet_cli.compress import compress
    from fastdet_cli.machine import cpu_kind

    # by content, config and CPU kind: the weight bits and Paddle's INT8 op set are chosen for the CPU they are made on
    key = f"{resolve_model(model_dir).content_hash()[:16]}_{cpu_kind()}_v{ARTIFACT_VERSION}"
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


def int8_for(spec: BackendSpec, int8_model=None, fp32_model=None, log=print) -> Int8Artifact:
    """The one answer to "which INT8 model runs on this backend" for diff, inspect --int8 and every command given
    a compress output (bench's INT8 rows choose among their candidates with the same rule, artifacts.choose):
    `int8_model` itself (an Int8Artifact, or a path: one model, or the form of a multi-form compress output
    `spec`'s backend runs best), else — for the embedded model (`fp32_model` None or 'default') — the cached PTQ
    version it runs best (above)."""
    if isinstance(int8_model, Int8Artifact):
        return int8_model
    if int8_model is not None:  # given: itself ("default", the FP32 embedded model, is refused by describe)
        found = describe_all(int8_model)
        return found[0] if len(found) == 1 else choose(spec, found)
    if fp32_model not in (None, "default"):
        raise FastdetError("--int8-model is needed for a model other than 'default'")
    return choose(spec, default_artifacts(DEFAULT_MODEL_DIR, log))
