"""What an output folder gets besides the quantized model: the FP32 deploy config byte for byte, the Paddle
Inference notes the FP32 program carries, and the size of its model files."""
from __future__ import annotations

import shutil
from pathlib import Path

from fastdet_cli.det.model import ModelSource


def copy_deploy_config(source: ModelSource, dest_dir: Path) -> Path:
    """The FP32 model's deploy config, byte for byte, under its own name (infer_cfg.yml or deploy.yaml)."""
    target = dest_dir / source.deploy.path.name
    shutil.copyfile(source.deploy.path, target)
    return target


def carry_paddle_notes(source: ModelSource, dest_dir: Path) -> list[str]:
    """The Paddle Inference passes measured to break the FP32 program (its fastdet.yml, e.g. after the x2paddle
    conversion) are switched off for the quantized program too: the same fusions meet the same ops."""
    import yaml

    from fastdet_cli.det.model import SIDECAR

    passes = source.sidecar().get("paddle_delete_passes") or []
    if passes:
        (dest_dir / SIDECAR).write_text(yaml.safe_dump({"paddle_delete_passes": list(passes),
                                                         "why": f"as for {source.path}"}, sort_keys=False))
    return list(passes)


def dir_size(path: Path) -> int:
    """Bytes of the model files in `path` (.pdmodel, .pdiparams, .onnx): the report's size_bytes."""
    return sum(p.stat().st_size for p in path.iterdir()
               if p.is_file() and p.suffix in (".pdmodel", ".pdiparams", ".onnx"))
