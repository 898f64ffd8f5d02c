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
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np

from fastdet_cli.artifacts import Fp32Form, Int8Artifact
from fastdet_cli.bench.latency import Stats, time_calls
from fastdet_cli.bench.report import BenchReport
from fastdet_cli.bench.rows import Row
from fastdet_cli.errors import FastdetError, UnsupportedMode
from fastdet_cli.outcome import FAILED, NONE, Outcome
from fastdet_cli.runtime.registry import AS_GIVEN, BACKENDS, FP32_MODEL_MODES, MAP_MODES, BackendSpec

CPU_BACKENDS = tuple(spec for spec in BACKENDS.values() if not spec.gpu_only)


@dataclass
class BenchSettings:
    model: str = "default"
    int8_models: tuple[str, ...] = ()  # INT8 artifacts (or multi-form folders); each backend takes the one it runs best
    compress_config: Path | None = None
    backends: tuple[BackendSpec, ...] = CPU_BACKENDS  # resolved by api.bench from the names given
    int8: bool = True
    fp16: bool = False
    bf16: bool | None = None  # the FP32 model in bf16; None: where the CPU has bf16 in hardware
    pinned: bool = False
    repeat: int = 1000
    warmup: int = 200
    time_limit: float | None = None  # --time: seconds per timed loop (repeat and warmup become "at most")
    threads: int = 1
    dataset: str = "default"
    eval: bool = True
    eval_limit: int | None = None
    end2end: bool = True  # off for random-weight models, where every box passes the score threshold
    max_map_drop: float = 0.5  # mAP points: the recommendation's accuracy bound


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def bench_one(model_path, spec: BackendSpec, options, image: np.ndarray, settings: BenchSettings, dataset,
              tick: Callable[[int], None], evaluate: bool = True) -> Row:
    from fastdet_cli.artifacts import detector
    from fastdet_cli.det.pipeline import StageTimes
    from fastdet_cli.evaluate.coco import coco_evaluate

    with detector(model_path, spec, options) as det:
        feed, _ = det.feed(image)
        runtime = time_calls(lambda: det.runner.infer(feed), settings.warmup, settings.repeat, tick,
                             settings.time_limit)
        total = StageTimes()

        det_runs = []

        def e2e():
            det(image)
            det_runs.append(1)
            for f in ("preprocess", "infer", "postprocess", "nms"):
                setattr(total, f, getattr(total, f) + getattr(det.times, f))

        end2end, stages = None, None
        if settings.end2end:
            end2end = Stats.of(time_calls(e2e, settings.warmup, settings.repeat, tick, settings.time_limit)).as_dict()
            runs = len(det_runs)
            stages = {"preprocess": total.preprocess, "compute": total.infer, "nms": total.nms,
                      "postprocess": total.postprocess - total.nms}
            stages = {k: round(v / runs * 1000, 4) for k, v in stages.items()}
            stages.update({"h2d": None, "d2h": None})  # inside compute on GPU backends; none on CPU
        kernels = det.runner.kernels(feed)
        row = Row(spec, "", Outcome(), Stats.of(runtime).as_dict(), end2end, stages,
                  model=str(det.source.path), rss_mb=round(rss_mb(), 1),
                  kernels=dataclasses.asdict(kernels) if kernels else None)
        if settings.time_limit is not None:  # which bound ended each timed loop
            row.stopped_by = {k: (None if st is None else "repeat" if st["n"] >= settings.repeat else
                                  f"time ({settings.time_limit:g} s)")
                              for k, st in (("runtime", row.runtime_ms), ("end2end", row.end2end_ms))}
        if settings.eval and dataset is not None and evaluate:
            res = coco_evaluate(det, dataset, settings.eval_limit)
            row.map, row.ap50, row.per_class_ap = res.stats["AP"], res.stats["AP50"], res.per_class
    return row


def int8_artifacts(settings: BenchSettings, log: Callable[[str], None]) -> list:
    """The INT8 artifacts to choose from: --int8-model(s), else --compress's output, else (embedded model) the
    cached PaddleSlim and ONNX Runtime PTQ versions, else none (the INT8 cells are "None" with NO_INT8)."""
    from fastdet_cli.artifacts import describe_all
    from fastdet_cli.compress.defaults import default_artifacts
    from fastdet_cli.det.model import resolve_model

    if settings.int8_models:
        return [a for m in settings.int8_models for a in describe_all(m)]
    if settings.compress_config:
        from fastdet_cli.compress import compress

        return describe_all(compress(settings.compress_config, log=log).output_dir)
    if settings.model == "default":
        return default_artifacts(resolve_model("default").dir, log)
    return []  # no INT8 model to run: the INT8 cells say so (run_bench)


NO_INT8 = "no INT8 model given: --int8-model DIR (a compress output) or --compress CONFIG"


def run_bench(settings: BenchSettings, log: Callable[[str], None] = print,
              progress: Callable[[str, int], Callable[[int], None]] | None = None) -> BenchReport:
    """Measure every requested backend × mode; returns the report (report.json: its as_dict, docs/bench.md). A
    backend that cannot run here (library or device missing) gets "skipped" rows, named or not; a row that fails
    never loses the rows measured."""
    from fastdet_cli.data.dataset import ImageFolder, resolve_eval_data
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.det.preprocess import read_image
    from fastdet_cli.machine import BF16_FLAGS, cpu_has, machine_info
    from fastdet_cli.runtime.registry import cuda_device_count

    specs = settings.backends
    on_cpu = [s.name for s in specs if not s.gpu_only]
    if on_cpu and any(s.gpu_only for s in specs) and cuda_device_count():  # say it: a GPU is there, unused by these
        log(f"{', '.join(on_cpu)}: measured on the CPU (bench runs CPU-capable backends on the CPU; the GPU rows "
            "are the GPU-only backends)")
    fp32 = resolve_model(settings.model)
    data = resolve_eval_data(settings.dataset)  # an image folder: agreement mAP with FP32 on each backend
    timing_image = data.image_files(1)[0] if isinstance(data, ImageFolder) else data.image_paths(limit=1)[0][1]
    image = read_image(timing_image)
    artifacts = int8_artifacts(settings, log) if settings.int8 else []
    for a in artifacts:
        if a.warning:
            log(a.warning)
    bf16 = cpu_has(BF16_FLAGS) if settings.bf16 is None else settings.bf16
    if settings.int8 and not artifacts:
        log(f"{NO_INT8}: FP32 rows only")
    modes = ["fp32"] + (["bf16"] if bf16 else []) + (["int8"] if artifacts or settings.int8 else []) + (
        ["int8+fp16"] if settings.fp16 and artifacts else []) + (
        ["int8+fp16+pm"] if settings.pinned and artifacts else [])
    rows: list[Row] = []
    for spec in specs:
        rows += _backend_rows(spec, modes, fp32, artifacts, data, image, settings, log, progress)
    from fastdet_cli.bench.verdicts import diff_target, int8_verdicts, per_class_deltas, recommend, set_speedups

    set_speedups(rows)
    recommendation = recommend(rows, settings.max_map_drop)
    return BenchReport(
        settings=_record(settings, artifacts, data, timing_image),
        machine={**machine_info(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)},
        versions=_versions(), rows=rows, per_class_delta=per_class_deltas(rows),
        int8_verdict=int8_verdicts(rows, settings.threads, log), recommendation=recommendation,
        diff_target=diff_target(rows, recommendation))


def _record(settings: BenchSettings, artifacts: list, data, timing_image: Path) -> dict:
    """The report's `settings`: BenchSettings' fields (backends by name) and what the figures include."""
    from fastdet_cli.data.dataset import ImageFolder

    folder = isinstance(data, ImageFolder)
    return {**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)},
            "backends": [s.name for s in settings.backends], "compress_config": str(settings.compress_config or ""),
            "int8_artifacts": [a.as_dict() for a in artifacts],
            "runtime_includes": "model run incl. host<->device copies on GPU backends; no pre/post-processing",
            "end2end_includes": "decoded BGR image -> boxes: preprocess + runtime + decode + NMS",
            "dataset_used": str(data.path if folder else data.ann_file), "timing_image": str(timing_image),
            "metric": ("agreement mAP: each backend's FP32 detections (score >= draw_threshold) as ground truth"
                       if folder else "COCO mAP against the annotations")}


def _backend_rows(spec: BackendSpec, modes: list[str], fp32, artifacts: list, data, image, settings: BenchSettings,
                  log: Callable[[str], None], progress) -> list[Row]:
    """One backend's rows, one per mode; what keeps a mode from running becomes that row's outcome."""
    from fastdet_cli.artifacts import choose
    from fastdet_cli.data.dataset import ImageFolder

    try:
        spec.check_can_run()
        if spec.model_format != fp32.format and spec.model_format == "paddle":
            raise UnsupportedMode(f"{spec.description.split(' (')[0]} needs a Paddle program; {fp32.path.name} is ONNX")
    except FastdetError as e:
        return [Row(spec, m, Outcome.of(e)) for m in modes]
    chosen: Int8Artifact | Outcome = Outcome(NONE, NO_INT8)
    if artifacts:
        try:
            chosen = choose(spec, artifacts)
        except UnsupportedMode as e:
            chosen = Outcome.of(e)
    form = _fp32_form(spec, fp32, settings, log)
    if isinstance(form, Outcome):  # no FP32 form at all (e.g. an NMS cut that fails its check): this backend's rows
        return [Row(spec, m, form) for m in modes]
    fp32_form = form.model
    dataset = _reference(spec, fp32_form, data, settings, log) if isinstance(data, ImageFolder) and settings.eval \
        else data
    rows = []
    for mode in modes:
        int8_mode = mode not in FP32_MODEL_MODES
        row = _mode_row(spec, mode, chosen if int8_mode else fp32_form, image, settings, dataset, log, progress)
        if int8_mode and isinstance(chosen, Int8Artifact):
            row.int8_artifact = chosen.as_dict()
        if not int8_mode:
            row.fp32_graph = form.as_dict()
        rows.append(row)
    if form.rewrite:  # the user's own graph, for the record: speedups and verdicts use the faster FP32 row
        row = _mode_row(spec, "fp32", form.as_given, image, settings, None, log, progress, label=AS_GIVEN)
        row.precision, row.fp32_graph = AS_GIVEN, {**form.as_dict(), "graph": "as given"}
        rows.append(row)
    return rows


def _fp32_form(spec: BackendSpec, fp32, settings: BenchSettings, log: Callable[[str], None]) -> Fp32Form | Outcome:
    """FP32 the way INT8 runs (an ONNX model's in-graph NMS cut: host NMS, as every INT8 artifact has it), in the
    fastest graph fastdet makes of it without changing its outputs: INT8 is compared with the best FP32. A failing
    rewrite or timing loses nothing (the graph as given is measured); no FP32 form at all is the rows' outcome."""
    from fastdet_cli.artifacts import best_fp32, nms_free_onnx

    try:
        form = best_fp32(fp32, spec, settings.threads)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        log(f"{spec.name}: FP32 rewrite not measured ({Outcome.of(e).why}): FP32 rows run the graph as given")
        try:
            as_given = nms_free_onnx(fp32) if spec.model_format == "onnx" else fp32
        except KeyboardInterrupt:
            raise
        except Exception as e2:
            return Outcome.of(e2)
        form = Fp32Form(as_given, as_given)
    if form.timing:
        log(f"{spec.name}: FP32 rows run {form.rewrite or 'the graph as given'} ({form.timing})")
    return form


def _reference(spec: BackendSpec, fp32_form, data, settings: BenchSettings, log: Callable[[str], None]):
    """An image folder labelled by this backend's FP32 detections (agreement mAP); None when that fails (the rows
    are still timed, their mAP cells stay empty and the log says why)."""
    from fastdet_cli.agreement import with_reference

    log(f"{spec.name}: FP32 detections on {data.path} as the reference (agreement mAP)")
    try:
        return with_reference(data, fp32_form, spec, spec.mode_options("fp32", settings.threads), settings.eval_limit)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        log(f"{spec.name}: no agreement mAP ({Outcome.of(e).why}): FP32 detections on {data.path} failed")
        return None


def _mode_row(spec: BackendSpec, mode: str, model, image, settings: BenchSettings, dataset,
              log: Callable[[str], None], progress, label: str | None = None) -> Row:
    """One backend × mode measured, or the outcome that kept it from running (`model` is an Outcome when this
    backend can run none of the INT8 artifacts)."""
    if isinstance(model, Outcome):
        return Row(spec, mode, model)
    try:
        opts = spec.mode_options(mode, settings.threads)
        runs = (2 if settings.end2end else 1) * (settings.warmup + settings.repeat)
        bound = f" (at most; or {settings.time_limit:g} s per loop)" if settings.time_limit else ""
        tick = progress(f"{spec.name} {label or mode}{bound}", runs) if progress else (lambda n: None)
        row = bench_one(model.path if isinstance(model, Int8Artifact) else model, spec, opts, image, settings,
                        dataset, tick, evaluate=mode in MAP_MODES)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one failing row (a runtime error, a bug) never loses the rows measured
        row = Row(spec, mode, Outcome.of(e))
        if row.outcome.state == FAILED:
            log(f"{spec.name} {mode} failed: {row.outcome.why}")
    row.precision = mode
    return row


def _versions() -> dict:
    from fastdet_cli.compress.report import versions

    return versions()
