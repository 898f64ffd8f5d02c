"""One benchmark run: every backend × precision mode, runtime and end-to-end latency, mAP on the same backend.

- Runtime latency: `runner.infer(feed)` alone on a fixed real input (the first dataset image through the
  model's own preprocessing); on GPU backends it includes the host→device and device→host copies; it excludes
  pre- and post-processing.
- End-to-end latency: decoded BGR image in → boxes out (preprocess + runtime + decode + NMS).
Both: `warmup` untimed runs, then `repeat` timed runs, CPU threads fixed to `threads` for every backend.
- INT8: each backend runs the INT8 artifact it runs best (artifacts.py); every row names its artifact.
- The verdicts (bench/verdicts.py): per-class AP deltas, why INT8 is not faster where it is not, and the
  recommendation.
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

from fastdet_cli.runtime.registry import BACKENDS, FP32_MODEL_MODES, MAP_MODES

CPU_BACKENDS = tuple(name for name, spec in BACKENDS.items() if not spec.gpu_only)


@dataclass
class BenchSettings:
    model: str = "default"
    int8_models: tuple[str, ...] = ()  # INT8 artifacts; each backend takes the one it runs best
    compress_config: Path | None = None
    backends: tuple[str, ...] = CPU_BACKENDS
    explicit_backends: bool = False
    int8: bool = True
    fp16: bool = False
    bf16: bool | None = None  # the FP32 model in bf16; None: where the CPU has bf16 in hardware
    pinned: bool = False
    repeat: int = 1000
    warmup: int = 200
    threads: int = 1
    dataset: str = "default"
    eval: bool = True
    eval_limit: int | None = None
    end2end: bool = True  # off for random-weight models, where every box passes the score threshold
    max_map_drop: float = 0.5  # mAP points: the recommendation's accuracy bound


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
    int8_artifact: dict | None = None  # INT8 rows: path, kind, method of the artifact this backend ran
    kernels: dict | None = None  # runtime.base.Kernels: the convolution kernels' ISA, as the runtime reports it


def mode_options(backend: str, mode: str, threads: int):
    """RunnerOptions for a backend in a mode, or the reason the backend has no such mode (the backend table)."""
    from fastdet_cli.runtime.registry import get_backend

    return get_backend(backend).mode_options(mode, threads)


def backend_status(name: str) -> str | None:
    """None when the backend can run here, else 'skipped: …'."""
    from fastdet_cli.runtime.registry import cuda_device_count, get_backend

    spec = get_backend(name)
    if not spec.installed():
        return f"skipped: not installed (pip install 'fastdet-cli[{spec.extra}]')"
    if spec.gpu_only and cuda_device_count() == 0:
        return "skipped: no GPU"
    return None


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def bench_one(model_path, backend: str, options, image: np.ndarray, settings: BenchSettings, dataset,
              tick: Callable[[int], None], evaluate: bool = True) -> Row:
    from fastdet_cli.artifacts import detector
    from fastdet_cli.det.pipeline import StageTimes
    from fastdet_cli.evaluate.coco import coco_evaluate

    with detector(model_path, backend, options) as det:
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
        kernels = det.runner.kernels(feed)
        row = Row(backend, "", "ok", Stats.of(runtime).as_dict(), end2end, stages,
                  model=str(det.source.path), rss_mb=round(rss_mb(), 1),
                  kernels=dataclasses.asdict(kernels) if kernels else None)
        if settings.eval and dataset is not None and evaluate:
            res = coco_evaluate(det, dataset, settings.eval_limit)
            row.map, row.ap50, row.per_class_ap = res.stats["AP"], res.stats["AP50"], res.per_class
    return row


def int8_artifacts(settings: BenchSettings, log: Callable[[str], None]) -> list:
    """The INT8 artifacts to choose from: --int8-model(s), else --compress's output, else (embedded model) the
    cached PaddleSlim and ONNX Runtime PTQ versions."""
    from fastdet_cli.artifacts import describe
    from fastdet_cli.compress.defaults import default_artifacts
    from fastdet_cli.det.model import resolve_model

    if settings.int8_models:
        return [describe(m) for m in settings.int8_models]
    if settings.compress_config:
        from fastdet_cli.compress import compress

        return [describe(compress(settings.compress_config, log=log).output_dir)]
    if settings.model == "default":
        return default_artifacts(resolve_model("default").dir, log)
    raise FastdetError("--int8 needs --int8-model DIR or --compress CONFIG for a model other than 'default'")


def run_bench(settings: BenchSettings, log: Callable[[str], None] = print,
              progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict:
    """Measure every requested backend × mode; returns the report dict (see docs/bench.md)."""
    from fastdet_cli.artifacts import choose, nms_free_onnx
    from fastdet_cli.data.dataset import ImageFolder, resolve_eval_data
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.det.preprocess import read_image
    from fastdet_cli.machine import machine_info
    from fastdet_cli.runtime.registry import get_backend

    for b in settings.backends:
        get_backend(b)
    fp32 = resolve_model(settings.model)
    data = resolve_eval_data(settings.dataset)  # an image folder: agreement mAP with FP32 on each backend
    timing_image = data.image_files(1)[0] if isinstance(data, ImageFolder) else data.image_paths(limit=1)[0][1]
    image = read_image(timing_image)
    artifacts = int8_artifacts(settings, log) if settings.int8 else []
    for a in artifacts:
        if a.warning:
            log(a.warning)
    from fastdet_cli.machine import BF16_FLAGS, cpu_has

    bf16 = cpu_has(BF16_FLAGS) if settings.bf16 is None else settings.bf16
    modes = ["fp32"] + (["bf16"] if bf16 else []) + (["int8"] if artifacts else []) + (
        ["int8+fp16"] if settings.fp16 and artifacts else []) + (["int8+fp16+pm"] if settings.pinned and artifacts else [])
    rows: list[Row] = []
    for backend in settings.backends:
        skip = backend_status(backend)
        if skip:
            if settings.explicit_backends:
                raise FastdetError(f"backend '{backend}' cannot run here: {skip.removeprefix('skipped: ')}")
            rows += [Row(backend, m, skip) for m in modes]
            continue
        spec = get_backend(backend)
        if spec.model_format != fp32.format and spec.model_format == "paddle":
            rows += [Row(backend, m, f"None: {spec.description.split(' (')[0]} needs a Paddle program; "
                                     f"{fp32.path.name} is ONNX") for m in modes]
            continue
        chosen = choose(backend, artifacts) if artifacts else None
        # FP32 the way INT8 runs: an ONNX model's in-graph NMS cut (host NMS), as every INT8 artifact has it
        fp32_form = nms_free_onnx(fp32) if spec.model_format == "onnx" else fp32
        dataset = data
        if isinstance(data, ImageFolder) and settings.eval:
            from fastdet_cli.agreement import with_reference

            log(f"{backend}: FP32 detections on {data.path} as the reference (agreement mAP)")
            dataset = with_reference(data, fp32_form, backend, mode_options(backend, "fp32", settings.threads),
                                     settings.eval_limit)
        for mode in modes:
            opts = mode_options(backend, mode, settings.threads)
            int8_mode = mode not in FP32_MODEL_MODES
            if int8_mode and isinstance(chosen, str):
                opts = chosen  # no artifact this backend can run
            if isinstance(opts, str):
                rows.append(Row(backend, mode, opts))
                continue
            runs = (2 if settings.end2end else 1) * (settings.warmup + settings.repeat)
            tick = progress(f"{backend} {mode}", runs) if progress else (lambda n: None)
            try:
                row = bench_one(chosen.path if int8_mode else fp32_form, backend, opts, image, settings, dataset,
                                tick, evaluate=mode in MAP_MODES)
            except UnsupportedMode as e:
                row = Row(backend, mode, f"None: {e}")
            except (MissingDependency, NoDevice) as e:
                if settings.explicit_backends:
                    raise
                row = Row(backend, mode, f"skipped: {e}")
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one failing row (a runtime error, a bug) never loses the rows measured
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                row = Row(backend, mode, f"failed: {type(e).__name__}: {first}"[:300])
                log(f"{backend} {mode} failed: {type(e).__name__}: {first}")
            row.precision = mode
            if int8_mode and chosen is not None and not isinstance(chosen, str):
                row.int8_artifact = chosen.as_dict()
            rows.append(row)
    report = {
        "schema": "fastdet-bench/1",
        "settings": {**dataclasses.asdict(settings), "compress_config": str(settings.compress_config or ""),
                     "int8_artifacts": [a.as_dict() for a in artifacts],
                     "runtime_includes": "model run incl. host<->device copies on GPU backends; no pre/post-processing",
                     "end2end_includes": "decoded BGR image -> boxes: preprocess + runtime + decode + NMS",
                     "dataset_used": str(data.path if isinstance(data, ImageFolder) else data.ann_file),
                     "timing_image": str(timing_image),
                     "metric": ("agreement mAP: each backend's FP32 detections (score >= draw_threshold) as ground "
                                "truth" if isinstance(data, ImageFolder) else "COCO mAP against the annotations")},
        "machine": {**machine_info(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)},
        "versions": _versions(),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    from fastdet_cli.bench.verdicts import int8_verdicts, per_class_deltas, recommend

    report["per_class_delta"] = per_class_deltas(report["rows"])
    report["int8_verdict"] = int8_verdicts(rows, settings.threads, log)
    report["recommendation"] = recommend(report["rows"], settings.max_map_drop)
    return report


def _versions() -> dict:
    from fastdet_cli.compress.common import versions

    return versions()
