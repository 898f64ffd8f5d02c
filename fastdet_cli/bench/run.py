"""One benchmark run: every backend × precision mode, runtime and end-to-end latency, mAP on the same backend.

- Runtime latency: `runner.infer(feed)` alone on a fixed real input (the first dataset image through the
  model's own preprocessing); on GPU backends it includes the host→device and device→host copies; it excludes
  pre- and post-processing.
- End-to-end latency: decoded BGR image in → boxes out (preprocess + runtime + decode + NMS).
Both: `warmup` untimed runs, then `repeat` timed runs, CPU threads fixed to `threads` for every backend.
- INT8: each backend runs the INT8 artifact it runs best (bench/artifacts.py); every row names its artifact.
- The recommendation: the fastest backend × precision whose mAP is within `max_map_drop` of FP32 on the same
  backend.
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
FLAG_POINTS = 5.0  # a class losing more than this many AP points under INT8 is flagged


@dataclass
class BenchSettings:
    model: str = "default"
    int8_models: tuple[str, ...] = ()  # INT8 artifacts; each backend takes the one it runs best
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


def int8_artifacts(settings: BenchSettings, log: Callable[[str], None]) -> list:
    """The INT8 artifacts to choose from: --int8-model(s), else --compress's output, else (embedded model) the
    cached PaddleSlim and ONNX Runtime PTQ versions."""
    from fastdet_cli.bench.artifacts import default_artifacts, describe
    from fastdet_cli.det.model import resolve_model

    if settings.int8_models:
        return [describe(m) for m in settings.int8_models]
    if settings.compress_config:
        from fastdet_cli.compress import compress

        return [describe(compress(settings.compress_config, log=log).output_dir)]
    if settings.model == "default":
        return default_artifacts(resolve_model("default").dir, log)
    raise FastdetError("--int8 needs --int8-model DIR or --compress CONFIG for a model other than 'default'")


def per_class_deltas(rows: list[dict]) -> dict:
    """Per backend: INT8 − FP32 AP per class (points), and the classes that lost more than FLAG_POINTS."""
    out = {}
    by = {(r["backend"], r["precision"]): r for r in rows}
    for (backend, prec), r in by.items():
        base = by.get((backend, "fp32"))
        if prec != "int8" or not base or not r["per_class_ap"] or not base["per_class_ap"]:
            continue
        delta = {c: round(100 * (r["per_class_ap"][c] - base["per_class_ap"][c]), 2) for c in base["per_class_ap"]}
        out[backend] = {"delta_points": delta, "flagged": [c for c, d in delta.items() if d < -FLAG_POINTS]}
    return out


def run_bench(settings: BenchSettings, log: Callable[[str], None] = print,
              progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict:
    """Measure every requested backend × mode; returns the report dict (see docs/bench.md)."""
    from fastdet_cli.bench.artifacts import choose
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
    artifacts = int8_artifacts(settings, log) if settings.int8 else []
    modes = ["fp32"] + (["int8"] if artifacts else []) + (["int8+fp16"] if settings.fp16 and artifacts else []) + (
        ["int8+fp16+pm"] if settings.pinned and artifacts else [])
    rows: list[Row] = []
    for backend in settings.backends:
        skip = backend_status(backend)
        if skip:
            if settings.explicit_backends:
                raise FastdetError(f"backend '{backend}' cannot run here: {skip.removeprefix('skipped: ')}")
            rows += [Row(backend, m, skip) for m in modes]
            continue
        chosen = choose(backend, artifacts) if artifacts else None
        for mode in modes:
            opts = mode_options(backend, mode, settings.threads)
            if mode != "fp32" and isinstance(chosen, str):
                opts = chosen  # no artifact this backend can run
            if isinstance(opts, str):
                rows.append(Row(backend, mode, opts))
                continue
            opts.extra["eval"] = mode in ("fp32", "int8")
            runs = (2 if settings.end2end else 1) * (settings.warmup + settings.repeat)
            tick = progress(f"{backend} {mode}", runs) if progress else (lambda n: None)
            try:
                row = bench_one(fp32.dir if mode == "fp32" else chosen.path, backend, opts, image, settings,
                                dataset, tick)
            except UnsupportedMode as e:
                row = Row(backend, mode, f"None: {e}")
            except (MissingDependency, NoDevice) as e:
                if settings.explicit_backends:
                    raise
                row = Row(backend, mode, f"skipped: {e}")
            row.precision = mode
            if mode != "fp32":
                row.int8_artifact = chosen.as_dict()
            rows.append(row)
    report = {
        "schema": "fastdet-bench/1",
        "settings": {**dataclasses.asdict(settings), "compress_config": str(settings.compress_config or ""),
                     "int8_artifacts": [a.as_dict() for a in artifacts],
                     "runtime_includes": "model run incl. host<->device copies on GPU backends; no pre/post-processing",
                     "end2end_includes": "decoded BGR image -> boxes: preprocess + runtime + decode + NMS",
                     "dataset_used": str(dataset.ann_file), "timing_image": str(dataset.image_paths(limit=1)[0][1])},
        "machine": {**machine_info(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)},
        "versions": _versions(),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    report["per_class_delta"] = per_class_deltas(report["rows"])
    report["int8_verdict"] = int8_verdicts(rows, settings.threads, log)
    report["recommendation"] = recommend(report["rows"], settings.max_map_drop)
    return report


def recommend(rows: list[dict], max_map_drop: float) -> dict:
    """The fastest backend × precision whose mAP is within `max_map_drop` points of FP32 on the same backend
    (end-to-end mean when measured, else runtime mean). INT8 rows without mAP cannot qualify unless no row has
    mAP at all (then speed alone decides, and the text says so)."""
    key = "end2end_ms" if any(r.get("end2end_ms") for r in rows) else "runtime_ms"
    ok = [r for r in rows if r["status"] == "ok" and r.get(key)]
    if not ok:
        return {"text": "no backend ran", "backend": None, "precision": None}
    fp32 = {r["backend"]: r for r in ok if r["precision"] == "fp32"}
    with_map = any(r.get("map") is not None for r in ok)

    def qualifies(r: dict) -> bool:
        if r["precision"] == "fp32":
            return True
        base = fp32.get(r["backend"])
        if not with_map:
            return True
        return (r.get("map") is not None and base is not None and base.get("map") is not None
                and 100 * (base["map"] - r["map"]) <= max_map_drop)

    best = min((r for r in ok if qualifies(r)), key=lambda r: r[key]["mean"])
    what = "end-to-end" if key == "end2end_ms" else "runtime"
    base = fp32.get(best["backend"])
    if best["precision"] == "fp32":
        text = (f"FP32 on {best['backend']} ({best[key]['mean']:.2f} ms {what}): INT8 does not pay here"
                + (f" (no INT8 row both faster and within {max_map_drop:g} mAP point)" if with_map else ""))
    else:
        speed = f", {base[key]['mean'] / best[key]['mean']:.2f}x its FP32" if base else ""
        acc = (f", mAP {best['map']:.3f} vs FP32 {base['map']:.3f}" if with_map and base and base.get("map") is not None
               else " (mAP not measured: speed only)")
        text = (f"{best['precision'].upper()} on {best['backend']} ({best[key]['mean']:.2f} ms {what}{speed}{acc}; "
                f"{best['int8_artifact']['method']}, {best['int8_artifact']['path']})")
    return {"text": text, "backend": best["backend"], "precision": best["precision"], "latency": what,
            "max_map_drop_points": max_map_drop}


def int8_verdicts(rows: list[Row], threads: int, log: Callable[[str], None]) -> dict[str, list[str]]:
    """For each backend where INT8 ran no faster than FP32: `fastdet inspect`'s verdict (a short profile of 10
    runs) on why, when the backend has a per-op profile."""
    from fastdet_cli.inspect import inspect_model

    mean = {(r.backend, r.precision): r.runtime_ms["mean"] for r in rows if r.status == "ok" and r.runtime_ms}
    paths = {r.backend: r.int8_artifact["path"] for r in rows if r.int8_artifact}
    out = {}
    for (backend, precision), ms in mean.items():
        if precision != "int8" or ms < mean.get((backend, "fp32"), 0.0):
            continue
        log(f"INT8 is not faster than FP32 on {backend}: profiling it (fastdet inspect) to say why")
        try:
            out[backend] = inspect_model(paths[backend], backend, threads, runs=10).verdict()
        except FastdetError as e:  # no per-op profile for this backend
            out[backend] = [f"no per-op profile: {e}"]
    return out


def _versions() -> dict:
    from fastdet_cli.compress.common import versions

    return versions()
