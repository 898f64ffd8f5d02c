"""What a `--model` argument names: a Paddle inference model dir, or an ONNX file/dir, with its deploy config."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastdet_cli.det.config import DeployConfig, find_deploy_config, load_deploy_config
from fastdet_cli.errors import FastdetError
from fastdet_cli.paddle_program import SIDECAR, check_not_paddle3, paddle_model_files
from fastdet_cli.paths import DEFAULT_MODEL_DIR


@dataclass(frozen=True)
class ModelSource:
    format: str  # "paddle" or "onnx"
    path: Path  # the Paddle model dir, or the .onnx file
    dir: Path
    deploy: DeployConfig

    @property
    def runner_path(self) -> Path:
        """What a runner loads: the .onnx file, or the Paddle model dir."""
        return self.path if self.format == "onnx" else self.dir

    def sidecar(self) -> dict:
        import yaml

        p = self.dir / SIDECAR  # beside an ONNX export (NMS parameters…) or a converted program (passes to avoid)
        if not p.exists():
            return {}
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise FastdetError(f"{p} is malformed: {str(e).splitlines()[0]}") from e
        return data if isinstance(data, dict) else {}

    def content_hash(self) -> str:
        """sha256 over the model files and deploy config: the key of derived artefacts (exports)."""
        h = hashlib.sha256()
        files = [self.path] if self.format == "onnx" else sorted(self.dir.glob("*.pdmodel")) + sorted(
            self.dir.glob("*.pdiparams"))
        for f in files + [self.deploy.path]:
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


def resolve_model(spec: str | Path | None) -> ModelSource:
    """`default`/None → the embedded default model; else a Paddle dir, an .onnx file, or a dir holding one."""
    if spec is None or str(spec) == "default":
        path = DEFAULT_MODEL_DIR
        if not (path / "model.pdmodel").exists():
            raise FastdetError("the embedded default model is not in this installation (fastdet_cli/models/default)")
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise FastdetError(f"model not found: {path}")
    if path.is_file():
        if path.suffix == ".onnx":
            return ModelSource("onnx", path, path.parent, load_deploy_config(find_deploy_config(path.parent)))
        if path.suffix == ".pdmodel":
            path = path.parent
        else:
            raise FastdetError(f"not a model: {path} (expected a Paddle model dir, an .onnx file, or a dir with one)")
    check_not_paddle3(path)
    pdmodels = sorted(path.glob("*.pdmodel"))
    if pdmodels:
        paddle_model_files(path)  # checks the weights are there
        return ModelSource("paddle", path, path, load_deploy_config(find_deploy_config(path)))
    onnx_files = sorted(path.glob("*.onnx"))
    if onnx_files:
        onnx = path / "model.onnx" if (path / "model.onnx").exists() else onnx_files[0]
        return ModelSource("onnx", onnx, path, load_deploy_config(find_deploy_config(path)))
    raise FastdetError(f"no model in {path} (expected model.pdmodel + model.pdiparams, or a .onnx file)")
