"""What the three stages of `fastdet compress` hand each other: the `Engine` row that quantizes, the `Job` that
`prepare` checked, and the `Quantized` record an engine returns."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastdet_cli import distributed

if TYPE_CHECKING:  # the real types, without importing them (and what they import) at start-up
    from fastdet_cli.compress.calibration import Statistics
    from fastdet_cli.compress.config import CompressConfig, QuantEngine
    from fastdet_cli.compress.samples import FeedSamples
    from fastdet_cli.det.model import ModelSource
    from fastdet_cli.runtime.registry import BackendSpec


@dataclass(frozen=True)
class Engine:
    """A quantization engine × method: what runs, what it writes, and the runtime its output is made for."""

    engine: QuantEngine  # Global.engine
    method: str  # ptq | qat
    label: str  # report's method_label
    quantize: Callable  # (job, out_dir, log) -> Quantized
    writes: str  # the model file it must leave in the output folder
    format: str  # "paddle" | "onnx"
    backend: BackendSpec  # the fastdet backend the output is made for: mAP is measured there
    runtime_label: str


@dataclass
class Job:
    """Everything `prepare` checked, for the two later stages."""

    config_path: Path
    cfg: CompressConfig
    engine: Engine
    devices: str
    source: ModelSource
    save_dir: Path
    eval_spec: str | None
    feeds: list[str]
    kept_float: list[str]  # single-output-channel convs (paddle2onnx cannot export them quantized)
    convs: dict
    images_source: str
    samples: FeedSamples
    world: distributed.World = distributed.World()
    shards: list[int] | None = None  # images per rank in a distributed run
    original: ModelSource | None = None  # the model the config names, when `source` is its x2paddle conversion
    statistics: Statistics | None = None  # shared by the forms (engine onnxruntime)
    holdout: list[Path] = field(default_factory=list)  # QAT: calibration images held back for early stopping
    all_images: list[Path] = field(default_factory=list)  # QAT: training and held-back images, in listed order

    @property
    def calibration(self) -> FeedSamples:
        """The images the ranges are calibrated on: all of them, in the order `--method ptq` takes them (the
        calibration choice's halves and bias correction's picks follow it). QAT's held-back slice is left out of
        its training only, so QAT starts from the PTQ model `--method ptq` makes (the best calibration found)."""
        if not self.holdout:
            return self.samples
        from fastdet_cli.compress.samples import FeedSamples

        return FeedSamples(self.source, self.all_images, self.feeds)


@dataclass
class Quantized:
    settings: dict  # the engine's resolved settings (report: config_resolved)
    search: dict | None  # the sensitivity search's record
    kept_float: list[str]
    seconds: float = 0.0
