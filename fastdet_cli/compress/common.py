"""What the engines share: calibration/training images preprocessed by the model's own deploy config, the
deploy config copy and compress_report.json."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fastdet_cli.det.model import ModelSource
from fastdet_cli.errors import FastdetError


def image_list(spec: str, limit: int | None) -> list[Path]:
    """`default` → the generated calibration split (never the val split that mAP is measured on); a COCO dir →
    its images; a folder → the image files in it."""
    from fastdet_cli.det.preprocess import expand_inputs
    from fastdet_cli.data.dataset import default_dataset_dir, resolve_dataset

    if spec == "default":
        root = default_dataset_dir(("calib",))
        files = sorted((root / "calib").glob("*.jpg"))
    else:
        path = Path(spec)
        if not path.is_dir():
            raise FastdetError(f"calibration image folder not found: {path}")
        if (path / "annotations").is_dir():
            files = [p for _, p in resolve_dataset(path).image_paths()]
        else:
            files = expand_inputs([path])
    if not files:
        raise FastdetError(f"no images in {spec}")
    return files[:limit] if limit else files


class FeedSamples:
    """Images → the model's feed dicts (without the batch axis), through the deploy config's preprocessing:
    the same code path `fastdet infer` uses."""

    def __init__(self, source: ModelSource, files: list[Path], feed_names: list[str]):
        from fastdet_cli.det.preprocess import Preprocessor

        self.files, self.feed_names = files, feed_names
        self.pre = Preprocessor.of(source.deploy)
        self.pipeline = " → ".join(["Decode(BGR→RGB)"] + self.pre.names)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        from fastdet_cli import interrupt
        from fastdet_cli.det.preprocess import read_image

        interrupt.check()  # the calibration and training loops pull every batch through here
        feed, _ = self.pre(read_image(self.files[i]))
        missing = [n for n in self.feed_names if n not in feed]
        if missing:
            raise FastdetError(f"the model takes {missing}, which preprocessing does not produce")
        return {n: feed[n][0] for n in self.feed_names}


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
    return sum(p.stat().st_size for p in path.iterdir()
               if p.is_file() and p.suffix in (".pdmodel", ".pdiparams", ".onnx"))


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = {}
    from fastdet_cli.runtime.registry import BACKENDS

    for dist in ("fastdet-cli", "paddleslim", "paddle2onnx"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    for spec in BACKENDS.values():  # under the backend's main name, whichever of its names is installed
        out[spec.dist] = out.get(spec.dist) or spec.version()
    return out


def write_report(out_dir: Path, report: dict) -> None:
    (out_dir / "compress_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

