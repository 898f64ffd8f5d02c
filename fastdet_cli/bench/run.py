"""One benchmark run: every backend × precision mode, runtime and end-to-end latency, mAP on the same backend.

- Runtime latency: `runner.infer(feed)` alone on a fixed real input (the first dataset image through the
  model's own preprocessing); on GPU backends it includes the host→device and device→host copies; it excludes
  pre- and post-processing.
- End-to-end latency: decoded BGR image in → boxes out (preprocess + runtime + decode + NMS).
Both: `warmup` untimed runs, then `repeat` timed runs, CPU threads fixed to `threads` for every backend.
"""
from __future__ import annotations

import dataclasses
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fastdet_cli.bench.latency import Stats, time_calls
from fastdet_cli.errors import FastdetError, MissingDependency, NoDevice, UnsupportedMode

MODES = ("fp32", "int8", "int8+fp16", "int8+fp16+pm")
CPU_BACKENDS = ("ort", "openvino", "paddle")


@dataclass
class BenchSettings:
    model: str = "default"
    int8_model: str | None = None
    compress_config: Path | None = None
    backends: tuple[str, ...] = CPU_BACKENDS
    explicit_backends: bool = False
    int8: bool = True
    fp16: bool = False
    pinned: bool = False
    repeat: int = 1000
    warmup: int = 200
    threads: int = 1
    dataset: str = "default"
    eval: bool = True
    eval_limit: int | None = None
    end2end: bool = True  # off for random-weight models, where every box passes the score threshold


@dataclass
class Row:
    backend: str
    precision: str
    status: str  # "ok", "None: <why>", "skipped: <why>"
    runtime_ms: dict | None = None
    end2end_ms: dict | None = None
    stages_ms: dict | None = None
    map: float | None = None
    ap50: float | None = None
    per_class_ap: dict = field(default_factory=dict)
    model: str | None = None
    rss_mb: float | None = None


def mode_options(backend: str, mode: str, threads: int):
    """RunnerOptions for a backend in a mode, or the reason the backend has no such mode."""
    from fastdet_cli.machine import cpu_model_and_flags
    from fastdet_cli.runtime.base import RunnerOptions

    gpu = backend in ("trt", "paddle-trt")
    base = RunnerOptions(device="gpu" if gpu else "cpu", threads=threads,
                         precision="fp32" if mode == "fp32" else "int8")
    if mode in ("fp32", "int8"):
        return base
    if mode == "int8+fp16":
        if backend == "trt":
            return dataclasses.replace(base, extra={"fp16": True})
        if backend == "openvino":
            flags = cpu_model_and_flags()[1]
            if not {"avx512_bf16", "amx_bf16"} & set(flags):
                return "None: this CPU has no bf16 (OpenVINO's reduced-precision hint)"
            return dataclasses.replace(base, extra={"openvino_config": {"INFERENCE_PRECISION_HINT": "bf16"}})
        return f"None: {backend} has no INT8+FP16 mode" + (" on CPU" if not gpu else "")
    if backend == "trt":
        return dataclasses.replace(base, pinned=True, extra={"fp16": True})
    return f"None: {backend} has no pinned-memory mode" + (" on CPU" if not gpu else "")


def backend_status(name: str) -> str | None:
    """None when the backend can run here, else 'skipped: …'."""
    from fastdet_cli.runtime.registry import cuda_device_count, get_backend

    spec = get_backend(name)
    if not spec.installed():
        return f"skipped: not installed (pip install 'fastdet-cli[{spec.extra}]')"
    if "cpu" not in spec.devices and cuda_device_count() == 0:
        return "skipped: no GPU"
    return None


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def bench_one(model_path, backend: str, options, image: np.ndarray, settings: BenchSettings, dataset,
              tick: Callable[[int], None]) -> Row:
    from fastdet_cli.det.pipeline import Detector, StageTimes
    from fastdet_cli.evaluate.coco import coco_evaluate

    with Detector.load(model_path, backend, options) as det:
        feed, _ = det.feed(image)
        runtime = time_calls(lambda: det.runner.infer(feed), settings.warmup, settings.repeat, tick)
        total = StageTimes()

        def e2e():
            det(image)
            for f in ("preprocess", "infer", "postprocess", "nms"):
                setattr(total, f, getattr(total, f) + getattr(det.times, f))

        end2end, stages = None, None
        if settings.end2end:
            end2end = Stats.of(time_calls(e2e, settings.warmup, settings.repeat, tick)).as_dict()
            runs = settings.warmup + settings.repeat
            stages = {"preprocess": total.preprocess, "compute": total.infer, "nms": total.nms,
                      "postprocess": total.postprocess - total.nms}
            stages = {k: round(v / runs * 1000, 4) for k, v in stages.items()}
            stages.update({"h2d": None, "d2h": None})  # inside compute on GPU backends; none on CPU
        row = Row(backend, "", "ok", Stats.of(runtime).as_dict(), end2end, stages,
                  model=str(det.source.path), rss_mb=round(rss_mb(), 1))
        if settings.eval and dataset is not None and options.extra.get("eval", True):
            res = coco_evaluate(det, dataset, settings.eval_limit)
            row.map, row.ap50, row.per_class_ap = res.stats["AP"], res.stats["AP50"], res.per_class
    return row


def default_int8_model(model_dir: Path, log: Callable[[str], None]) -> tuple[Path, str]:
    """The embedded model's PTQ version, made with the shipped config and cached by the model's content."""
    from fastdet_cli.compress import compress
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paths import DEFAULT_PTQ_CONFIG, cache_dir

    key = resolve_model(model_dir).content_hash()[:16]
    out = cache_dir() / "compressed" / f"default_ptq_{key}"
    if not (out / "model.pdmodel").exists():
        log(f"making the INT8 model with {DEFAULT_PTQ_CONFIG.name} (cached in {out})")
        compress(DEFAULT_PTQ_CONFIG, "ptq", out, log=log)
    return out, "PTQ"


def int8_method(path: Path) -> str:
    import json

    report = path / "compress_report.json"
    if report.exists():
        return json.loads(report.read_text()).get("method_label", "INT8")
    return "INT8 (given)"


def run_bench(settings: BenchSettings, log: Callable[[str], None] = print,
              progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict:
    """Measure every requested backend × mode; returns the report dict (see docs/bench.md)."""
    from fastdet_cli.bench.report import per_class_deltas
    from fastdet_cli.data.dataset import resolve_dataset
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.det.preprocess import read_image
    from fastdet_cli.machine import machine_info
    from fastdet_cli.runtime.registry import get_backend

    for b in settings.backends:
        get_backend(b)
    fp32 = resolve_model(settings.model)
    dataset = resolve_dataset(settings.dataset)
    image = read_image(dataset.image_paths(limit=1)[0][1])
    int8_path, method = None, None
    if settings.int8:
        if settings.int8_model:
            int8_path = resolve_model(settings.int8_model).dir
            method = int8_method(int8_path)
        elif settings.compress_config:
            from fastdet_cli.compress import compress

            res = compress(settings.compress_config, log=log)
            int8_path, method = res.output_dir, res.report["method_label"]
        elif settings.model == "default":
            int8_path, method = default_int8_model(fp32.dir, log)
        else:
            raise FastdetError("--int8 needs --int8-model DIR or --compress CONFIG for a model other than 'default'")
    modes = ["fp32"] + (["int8"] if int8_path else []) + (["int8+fp16"] if settings.fp16 and int8_path else []) + (
        ["int8+fp16+pm"] if settings.pinned and int8_path else [])
    rows: list[Row] = []
    for backend in settings.backends:
        skip = backend_status(backend)
        if skip:
            if settings.explicit_backends:
                raise FastdetError(f"backend '{backend}' cannot run here: {skip.removeprefix('skipped: ')}")
            rows += [Row(backend, m, skip) for m in modes]
            continue
        for mode in modes:
            opts = mode_options(backend, mode, settings.threads)
            if isinstance(opts, str):
                rows.append(Row(backend, mode, opts))
                continue
            opts.extra["eval"] = mode in ("fp32", "int8")
            runs = (2 if settings.end2end else 1) * (settings.warmup + settings.repeat)
            tick = progress(f"{backend} {mode}", runs) if progress else (lambda n: None)
            try:
                row = bench_one(fp32.dir if mode == "fp32" else int8_path, backend, opts, image, settings, dataset,
                                tick)
            except UnsupportedMode as e:
                row = Row(backend, mode, f"None: {e}")
            except (MissingDependency, NoDevice) as e:
                if settings.explicit_backends:
                    raise
                row = Row(backend, mode, f"skipped: {e}")
            row.precision = mode
            rows.append(row)
    report = {
        "schema": "fastdet-bench/1",
        "settings": {**dataclasses.asdict(settings), "compress_config": str(settings.compress_config or ""),
                     "int8_model_used": str(int8_path or ""), "int8_method": method,
                     "runtime_includes": "model run incl. host<->device copies on GPU backends; no pre/post-processing",
                     "end2end_includes": "decoded BGR image -> boxes: preprocess + runtime + decode + NMS",
                     "dataset_used": str(dataset.ann_file), "timing_image": str(dataset.image_paths(limit=1)[0][1])},
        "machine": {**machine_info(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)},
        "versions": _versions(),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    report["per_class_delta"] = per_class_deltas(report["rows"])
    report["int8_verdict"] = int8_verdicts(rows, int8_path, settings.threads, log)
    return report


def int8_verdicts(rows: list[Row], int8_path, threads: int, log: Callable[[str], None]) -> dict[str, list[str]]:
    """For each backend where INT8 ran no faster than FP32: `fastdet inspect`'s verdict (a short profile of 10
    runs) on why, when the backend has a per-op profile."""
    from fastdet_cli.inspect import inspect_model

    mean = {(r.backend, r.precision): r.runtime_ms["mean"] for r in rows if r.status == "ok" and r.runtime_ms}
    out = {}
    for (backend, precision), ms in mean.items():
        if precision != "int8" or ms < mean.get((backend, "fp32"), 0.0):
            continue
        log(f"INT8 is not faster than FP32 on {backend}: profiling it (fastdet inspect) to say why")
        try:
            out[backend] = inspect_model(str(int8_path), backend, threads, runs=10).verdict()
        except FastdetError as e:  # no per-op profile for this backend
            out[backend] = [f"no per-op profile: {e}"]
    return out


def _versions() -> dict:
    from fastdet_cli.compress.common import versions

    return versions()
