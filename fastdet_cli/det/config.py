"""PaddleDetection's deploy config (`infer_cfg.yml`, also shipped as `deploy.yaml`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastdet_cli.errors import FastdetError

DEPLOY_CONFIG_NAMES = ("infer_cfg.yml", "deploy.yaml", "infer_cfg.yaml", "deploy.yml")


@dataclass(frozen=True)
class NmsParams:
    """Parameters of PaddleDetection's multiclass NMS (`multiclass_nms3`)."""

    score_threshold: float = 0.025
    nms_threshold: float = 0.6
    nms_top_k: int = 1000
    keep_top_k: int = 100
    background_label: int = -1
    normalized: bool = True
    nms_eta: float = 1.0

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> NmsParams:
        known = {k: m[k] for k in cls.__dataclass_fields__ if k in m}
        return cls(**known)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class DeployConfig:
    """What fastdet reads from the deploy config: arch, preprocess ops, labels, thresholds, NMS, strides."""

    path: Path
    arch: str
    preprocess: list[dict[str, Any]]
    label_list: list[str]
    draw_threshold: float = 0.5
    nms: NmsParams | None = None
    fpn_stride: list[int] = field(default_factory=list)
    min_subgraph_size: int = 3
    raw: dict[str, Any] = field(default_factory=dict)

    def label(self, class_id: int) -> str:
        return self.label_list[class_id] if 0 <= class_id < len(self.label_list) else str(class_id)


def find_deploy_config(model_dir: Path) -> Path:
    """The deploy config file in `model_dir`, under any of its usual names."""
    for name in DEPLOY_CONFIG_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise FastdetError(f"no deploy config in {model_dir} (looked for {', '.join(DEPLOY_CONFIG_NAMES)})")


def load_deploy_config(path: Path) -> DeployConfig:
    """Parse and validate a deploy config; every problem is one FastdetError naming the file."""
    import yaml

    if path.is_dir():
        path = find_deploy_config(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise FastdetError(f"cannot read deploy config {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(raw, dict):
        raise FastdetError(f"deploy config {path} is not a mapping")
    pre = raw.get("Preprocess")
    if not isinstance(pre, list) or not all(isinstance(op, dict) and "type" in op for op in pre):
        raise FastdetError(f"deploy config {path}: 'Preprocess' must be a list of ops with a 'type'")
    labels = raw.get("label_list")
    if not isinstance(labels, list):
        raise FastdetError(f"deploy config {path}: 'label_list' is missing or not a list")
    nms = raw.get("NMS")
    if nms is not None and not isinstance(nms, dict):
        raise FastdetError(f"deploy config {path}: 'NMS' must be a mapping")
    try:
        return DeployConfig(
            path=path, arch=str(raw.get("arch", "")), preprocess=pre, label_list=[str(x) for x in labels],
            draw_threshold=float(raw.get("draw_threshold", 0.5)),
            nms=NmsParams.from_mapping(nms) if nms else None,
            fpn_stride=[int(s) for s in raw.get("fpn_stride") or []],
            min_subgraph_size=int(raw.get("min_subgraph_size", 3)), raw=raw)
    except (TypeError, ValueError) as e:
        raise FastdetError(f"deploy config {path}: bad value ({e})") from e
