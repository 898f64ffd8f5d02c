"""One candidate of the sensitivity search, measured whole: the INT8 model with some convolutions in float,
written as it is deployed (compress/sensitivity.py: `deployable`), its mAP on the runtime the output is made for,
and its runtime timed alternately with the best FP32 graph on that runtime."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdet_cli import interrupt
from fastdet_cli.compress.sensitivity import Site, deployable
from fastdet_cli.det.model import ModelSource
from fastdet_cli.runtime.registry import BackendSpec


@dataclass
class Step:
    """One measured model of the search: `float_layers` of the ranking kept in float."""

    float_layers: int
    map: float
    runtime_ms: float | None  # median runtime on the search's backend (None: not measured)
    fp32_ms: float | None = None  # the FP32 model's median, timed alternately with this one (interleaved_ms)

    @property
    def speedup(self) -> float | None:
        return self.fp32_ms / self.runtime_ms if self.runtime_ms and self.fp32_ms else None

    @property
    def faster(self) -> bool:
        return self.runtime_ms is not None and self.fp32_ms is not None and self.runtime_ms < self.fp32_ms


def evaluate_map(model, dataset, spec: BackendSpec) -> float:
    """mAP@[.5:.95] of a model (ModelSource or fastdet ONNX model dir) on `spec`'s backend, on every core."""
    import os

    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.runtime.base import RunnerOptions

    with detector(model, spec, RunnerOptions(threads=os.cpu_count() or 1)) as det:
        return coco_evaluate(det, dataset).map


def interleaved_ms(model_path, fp32_path, spec: BackendSpec, feed: dict[str, np.ndarray],
                   min_seconds: float = 1.0) -> tuple[float, float]:
    """(INT8, FP32) median runtimes in ms, one thread, of the ONNX models at `model_path` and `fp32_path` on
    `spec`'s backend, in the modes `fastdet bench` runs them in: what one step of the search costs in latency, on
    the runtime its output is made for, timed alternately (runtime.timing.alternate_ms). While this was built, two
    separate timings once made the search keep a model 16 mAP points worse: a candidate measured 3.183 ms against
    an FP32 model timed earlier at 3.181 ms was "no longer faster"."""
    from fastdet_cli.runtime.registry import create_runner
    from fastdet_cli.runtime.timing import alternate_ms

    with create_runner(spec, model_path, spec.mode_options("int8", 1)) as int8, \
            create_runner(spec, fp32_path, spec.mode_options("fp32", 1)) as fp32:
        int8_ms, fp32_ms = alternate_ms([(int8, feed), (fp32, feed)], min_seconds=min_seconds)
    return int8_ms, fp32_ms


class Variants:
    """The variants of one INT8 model: each written over the model.onnx of a copy of its folder (`work_dir`), as
    the deployable graph with some convolutions in float, and measured there: its mAP on `judge`, and with `timing`
    (the backend the output is made for; None: not measured) its runtime against the best FP32 graph fastdet makes
    for that backend (`time_against`). `remove()` deletes the copy."""

    def __init__(self, int8_model, int8_dir: Path, work_dir: Path, dataset, judge: BackendSpec,
                 timing: BackendSpec | None, feed: dict[str, np.ndarray]):
        from fastdet_cli.det.model import resolve_model

        self.int8_model, self.work_dir, self.dataset = int8_model, work_dir, dataset
        self.judge, self.timing, self.feed = judge, timing, feed
        shutil.rmtree(work_dir, ignore_errors=True)
        shutil.copytree(int8_dir, work_dir)
        self.path = resolve_model(work_dir).path
        self.fp32_path: Path | None = None  # the FP32 graph timed against
        self.fp32_graph = ""  # which one: "as given" or its rewrite (artifacts.best_fp32)

    def time_against(self, fp32: ModelSource) -> None:
        """INT8 is timed against the best FP32 graph fastdet makes for the timing backend (as bench's FP32 row)."""
        from fastdet_cli.artifacts import best_fp32

        form = best_fp32(fp32, self.timing, 1)
        self.fp32_path, self.fp32_graph = form.model.path, form.rewrite or "as given"

    def write(self, sites: list[Site]) -> None:
        """The variant with `sites` in float, written as it is deployed (weights folded to int8)."""
        import onnx

        onnx.save(deployable(self.int8_model, sites), str(self.path))

    def map(self) -> float:
        """mAP of the variant written, on the judge backend."""
        return evaluate_map(self.work_dir, self.dataset, self.judge)

    def timed(self) -> tuple[float | None, float | None]:
        """(INT8, FP32) median ms of the variant written and the FP32 graph, timed alternately; (None, None)
        without a timing backend."""
        if self.timing is None:
            return None, None
        int8_ms, fp32_ms = interleaved_ms(self.path, self.fp32_path, self.timing, self.feed)
        if int8_ms >= fp32_ms:  # "not faster" is reported and warned of: confirmed by a second, 3× longer timing
            int8_ms, fp32_ms = interleaved_ms(self.path, self.fp32_path, self.timing, self.feed, min_seconds=3.0)
        return int8_ms, fp32_ms

    def measure(self, sites: list[Site], timed: bool = True, known_map: float | None = None) -> Step:
        """The INT8 model with `sites` in float: its mAP (unless known) and, when `timed`, its runtime."""
        interrupt.check()
        self.write(sites)
        return Step(len(sites), self.map() if known_map is None else known_map,
                    *(self.timed() if timed else (None, None)))

    def remove(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)
