"""fastdet from Python: one function per command, returning typed results (docs/api.md shows a session).

    from fastdet_cli import api
    results = api.detect(["scene.jpg"], model="default", backend="ort")

Models are given as `fastdet --model` takes them ('default' = the embedded model, a Paddle model folder, an ONNX
file or folder), datasets as `--dataset` does ('default' = the generated val split, or a COCO folder), backends
by name (`fastdet env` lists them). Bad input raises `fastdet_cli.errors.FastdetError` with a one-line message.
`log` arguments receive the lines the command would print (default: print). Importing this module imports
nothing heavy; each function imports what it needs."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable, Iterable

from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:
    from fastdet_cli.bench.report import BenchReport
    from fastdet_cli.compress import CompressResult
    from fastdet_cli.diff import DiffResult
    from fastdet_cli.environment import Environment
    from fastdet_cli.evaluate.coco import EvalResult
    from fastdet_cli.export.onnx import ExportResult
    from fastdet_cli.infer import ImageResult
    from fastdet_cli.inspection import Inspection
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import BackendSpec


def backend_names() -> tuple[str, ...]:
    """Every backend fastdet knows (`fastdet env` says which run here)."""
    from fastdet_cli.runtime.registry import BACKENDS

    return tuple(BACKENDS)


def resolve_backend(name: str | BackendSpec) -> BackendSpec:
    """A backend by name, resolved once here for the library below (which takes the `BackendSpec` only); an
    unknown name is a FastdetError naming the close one."""
    from fastdet_cli.runtime.registry import get_backend

    return get_backend(name)


@contextmanager
def _library_output(command: str | None, log: Callable[[str], None]):
    """With `command`: the libraries' own output (Paddle, PaddleSlim, ONNX Runtime, OpenVINO) goes to a log file
    named on `log` first; fastdet's console (ui.make_console(own_fd=True)) stays readable. Without: as it is."""
    if command is None:
        yield
        return
    from fastdet_cli.outputs import library_output_to
    from fastdet_cli.paths import library_log_path

    path = library_log_path(command)
    log(f"library output (Paddle, PaddleSlim, ONNX Runtime, OpenVINO) goes to {path}")
    with library_output_to(path):
        yield


def runner_options(threads: int = 1, device: str = "cpu", precision: str = "fp32") -> RunnerOptions:
    """The backend settings: CPU threads (intra-op), device (cpu, gpu, or an OpenVINO device name such as GPU.0)
    and precision."""
    from fastdet_cli.runtime.base import RunnerOptions

    return RunnerOptions(device=device.lower() if device.lower() in ("cpu", "gpu") else device, threads=threads,
                         precision=precision)


def _paths(images: str | Path | Iterable[str | Path]) -> list[Path]:
    return [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images]


def detect(images: str | Path | Iterable[str | Path], model: str | Path = "default", backend: str = "ort",
           threshold: float | None = None, *, threads: int = 1, device: str = "cpu", save_dir: Path | None = None,
           json_out: Path | None = None, log: Callable[[str], None] = print,
           on_image: Callable[[ImageResult], None] | None = None) -> list[ImageResult]:
    """Detect objects in image files (folders: their images), like `fastdet infer`.

    Returns one `ImageResult` per image, in order: its `boxes` (`Box`: class_id, label, score, bbox x1, y1, x2,
    y2 in pixels) scoring at least `threshold` (default: the deploy config's draw_threshold), its size and the
    backend's runtime; an unreadable image has `error` set instead of raising. `save_dir`: images with boxes
    drawn; `json_out`: the JSON record; `on_image`: called with each result as soon as it is known."""
    from fastdet_cli.infer import detect_images

    return detect_images(_paths(images), model, resolve_backend(backend), runner_options(threads, device), threshold,
                         save_dir,
                         json_out, log, on_image)


@dataclass
class Evaluation:
    """`evaluate`'s result; `as_dict()` is `fastdet eval --json`'s record."""

    model: str  # "default (the embedded model)" or the model file the backend ran
    backend: str
    dataset: Path  # the annotation file (with a reference: its detections as ground truth)
    reference: str | None  # the model whose detections were the ground truth (agreement mAP), or None (COCO)
    metrics: EvalResult  # stats (AP, AP50, AP75, AP_small…), per_class AP, images, detections; .map
    notes: list[str] = field(default_factory=list)  # what the detector noted (e.g. derived settings)

    def as_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "dataset": str(self.dataset),
                "metric": "agreement" if self.reference else "coco", "reference": self.reference,
                **self.metrics.as_dict()}


def evaluate(model: str | Path = "default", dataset: str | Path = "default", backend: str = "ort", *,
             threads: int = 1, device: str = "cpu", limit: int | None = None, reference: str | None = None,
             json_out: Path | None = None,
             progress: Callable[[str, int, int | None], None] | None = None) -> Evaluation:
    """COCO bbox mAP of `model` on `dataset` (the first `limit` images), like `fastdet eval`.

    `reference`: 'fp32' (the FP32 model this INT8 model was made from) or a model whose detections serve as the
    ground truth (agreement mAP; a folder of images is then enough as `dataset`). `progress(stage, done,
    total)` follows the work (`done` 0 and `total` None when a stage starts)."""
    from fastdet_cli.artifacts import detector
    from fastdet_cli.data.dataset import resolve_dataset
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.outputs import check_output_file, write_json_atomic

    check_output_file(json_out, "--json")
    opts, spec = runner_options(threads, device), resolve_backend(backend)
    step = progress or (lambda stage, done, total: None)
    if reference is None:
        ds = resolve_dataset(dataset)
    else:
        from fastdet_cli.agreement import fp32_of, with_reference
        from fastdet_cli.data.dataset import resolve_eval_data

        ref = fp32_of(model) if reference == "fp32" else reference
        stage = f"reference detections ({ref}) on {backend}"
        step(stage, 0, None)
        ds = with_reference(resolve_eval_data(dataset), ref, spec, opts, limit,
                            lambda n, total: step(stage, n, total))
    with detector(model, spec, opts) as det:
        stage = f"evaluating on {backend}"
        step(stage, 0, None)
        metrics = coco_evaluate(det, ds, limit, lambda n, total: step(stage, n, total))
    source = "default (the embedded model)" if model == "default" else str(det.source.path)
    result = Evaluation(source, det.backend, ds.ann_file, ds.reference, metrics, list(det.notes))
    if json_out is not None:
        write_json_atomic(json_out, result.as_dict())
    return result


@dataclass
class ExportRun:
    """`export`'s result."""

    source: Path  # the folder of the model that was exported
    onnx: ExportResult  # onnx_path, nms_removed, quantized, max_diff (the validation's figures), notes…
    engine: Path | None = None  # the TensorRT engine (format "trt")


def export(output: str | Path, model: str | Path = "default", fmt: str = "onnx", *, remove_nms: bool = True,
           fp16: bool = False, int8: bool = False, ort_u8: bool = True, weight_bits: int | None = None,
           shape_range: str | None = None, target: str | None = None) -> ExportRun:
    """Export a Paddle inference model to ONNX in `output` (validated against Paddle Inference on the same
    input), and with `fmt="trt"` build a TensorRT engine from it, like `fastdet export` (same options)."""
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.export.onnx import export_onnx
    from fastdet_cli.outputs import check_output_dir

    if fmt not in ("onnx", "trt"):
        raise FastdetError(f"unknown export format '{fmt}' (choose onnx or trt)")
    if fp16 and fmt != "trt":
        raise FastdetError("--fp16 applies to TensorRT engines (--format trt); ONNX exports stay FP32 or INT8")
    from fastdet_cli.export.targets import DEFAULT_TARGET, ONNX_TARGETS

    trt_target = next(t.name for t in ONNX_TARGETS.values() if t.gpu)  # the flavour TensorRT engines build from
    target = target or (trt_target if fmt == "trt" else DEFAULT_TARGET)
    if fmt == "trt" and target != trt_target:
        raise FastdetError("--format trt builds from the TensorRT flavour: drop --for or use --for tensorrt")
    ranges = {}
    if shape_range:
        if fmt != "trt":
            raise FastdetError("--shape-range applies to TensorRT engines (--format trt)")
        from fastdet_cli.export.trt import parse_shape_range

        ranges = parse_shape_range(shape_range)
    check_output_dir(output, "--output")
    if fmt == "trt":  # before any model work: TensorRT and a GPU are there, or one line says which is not
        from fastdet_cli.export.trt import check_trt_available

        check_trt_available()
    source = resolve_model(model)
    result = ExportRun(source.dir, export_onnx(source, Path(output), remove_nms=remove_nms, int8=int8,
                                               ort_u8=ort_u8, weight_bits=weight_bits, target=target))
    if fmt == "trt":
        from fastdet_cli.artifacts import static_input_shapes
        from fastdet_cli.export.trt import build_engine

        shapes = static_input_shapes(resolve_model(result.onnx.output_dir))  # the deploy config's image size
        result.engine = build_engine(result.onnx.onnx_path, "int8" if int8 else "fp16" if fp16 else "fp32",
                                     fp16=int8 and fp16, input_shapes=shapes, shape_ranges=ranges)
    return result


def compress(config: str | Path, *, method: str | None = None, save_dir: str | Path | None = None,
             devices: str = "cpu", eval_dataset: str | None = None, engine: str | None = None,
             library_log: bool = False, log: Callable[[str], None] = print) -> CompressResult:
    """Quantize the model a compression YAML names, like `fastdet compress` (minutes, not seconds).

    Returns a `CompressResult`: `output_dir` (the quantized model, the FP32 deploy config copied,
    compress_report.json) and `report`, that report typed (`as_dict()` is the file): a `CompressReport` — `method`,
    `engine`, `method_label`, `images` (`source`, `count`, `first`), `preprocess`, `kept_float`, `size_bytes`
    (`fp32`, `int8`), `seconds`, `met` (the accuracy budget, None without one), `sensitivity_search`,
    `config_resolved`, `map` (`MapComparison`: `fp32`/`int8` `ApStats` `ap`, `ap50`, `ap75`, on `runtime`, when
    `eval_dataset` or the config's Global.eval_dataset is given), `distributed`… — or, for a config naming several
    deploy targets, a `FormsReport` (`forms`: target → `FormSummary`) with each form's `CompressReport` in
    `form_reports`; `models()` lists (target, folder, report) either way. On the ranks > 0 of a distributed run,
    `output_dir` and `report` are None. `library_log`: the libraries' own output goes to a log file (named on
    `log`)."""
    from fastdet_cli.compress import compress as run
    from fastdet_cli.outputs import check_output_dir

    check_output_dir(save_dir, "--save-dir")
    with _library_output("compress" if library_log else None, log):
        return run(Path(config), method, Path(save_dir) if save_dir else None, devices, eval_dataset, log=log,
                   engine=engine, evaluate=True)


def bench(settings=None, *, report_dir: str | Path | None = None, diff_images: bool = False,
          library_log: bool = False, log: Callable[[str], None] = print, progress=None, **kwargs) -> BenchReport:
    """Latency (runtime and end-to-end) and mAP per backend × precision, like `fastdet bench` (minutes).

    `settings`: a `fastdet_cli.bench.run.BenchSettings`, or its fields as keyword arguments (e.g.
    `backends=("ort",), repeat=100, warmup=10`; keyword arguments given with `settings` replace its fields;
    backends by name). Returns the `BenchReport` (`rows`, `recommendation`, …; `as_dict()` is report.json, see
    docs/bench.md). `report_dir`: report.json/.csv/.md and the plot written there (`files`), with `diff_images`
    also FP32 vs INT8 images of the least-agreeing images in its `diff/` (a failure there is one of the report's
    `notes`, never a lost report). `library_log`: the libraries' own output goes to a log file (named on `log`)."""
    import dataclasses

    from fastdet_cli.bench.run import BenchSettings, run_bench
    from fastdet_cli.outputs import check_output_dir

    settings = dataclasses.replace(settings, **kwargs) if settings is not None else BenchSettings(**kwargs)
    names = settings.backends
    if isinstance(names, str):  # "all" or "ort,openvino" as the command line gives them
        names = backend_names() if names == "all" else tuple(b.strip() for b in names.split(","))
    if not names or not all(names):
        raise FastdetError(f"--backend {settings.backends!r} has an empty item: give backend names, or 'all'")
    settings = dataclasses.replace(settings, backends=tuple(resolve_backend(b) for b in names))
    check_output_dir(report_dir, "--report")
    with _library_output("bench" if library_log else None, log):
        report = run_bench(settings, log, progress)
        if report_dir is not None and diff_images:
            from fastdet_cli.bench.images import diff_images as images

            images(report, settings, Path(report_dir) / "diff")
    if report_dir is not None:
        from fastdet_cli.render.bench import write_report

        report.files = write_report(report, Path(report_dir))
    return report


def merge_reports(inputs: Iterable[str | Path], out: str | Path) -> BenchReport:
    """One report from bench reports of many machines (report.json files or their folders), written to `out`
    like `fastdet report merge`: a hardware column, versions and settings per row (`files`: what was written)."""
    from fastdet_cli.bench.merge import merge_reports as merge
    from fastdet_cli.outputs import check_output_dir
    from fastdet_cli.render.bench import write_report

    check_output_dir(out, "--out")
    merged = merge(list(inputs))
    merged.files = write_report(merged, Path(out))
    return merged


def diff(images: str | Path | Iterable[str | Path] | None = None, model: str | Path = "default",
         int8_model: str | Path | None = None, backend: str = "ort", *, save_dir: str | Path,
         dataset: str | None = None, limit: int | None = None, threshold: float | None = None, iou: float = 0.5,
         worst: int = 6, threads: int = 1, device: str = "cpu", progress: Callable[[int, int], None] | None = None,
         library_log: bool = False, log: Callable[[str], None] = print) -> DiffResult:
    """FP32 vs INT8 on the same images (or `dataset`'s, ground truth drawn) and backend, like `fastdet diff`.

    `int8_model`: the quantized model (default: for the embedded model, the one `fastdet bench --int8` runs on
    `backend`, made on first use). Writes diff.json, one side-by-side PNG per image and montage.png (the
    `worst` least-agreeing images) to `save_dir`. Returns a `DiffResult`: `summary` (boxes matched, missed by
    INT8, extra in INT8, mean IoU, agreement), `images` (one `ImageDiff` each), `worst`, `skipped`.
    `library_log`: the libraries' own output goes to a log file (named on `log`)."""
    from fastdet_cli.diff import check_inputs, diff_models

    spec = resolve_backend(backend)
    files, ds = check_inputs(_paths(images) if images is not None else None, dataset, threshold, iou, save_dir)
    with _library_output("diff" if library_log else None, log):
        return diff_models(model, int8_model, spec, files, Path(save_dir), dataset=ds, limit=limit,
                           threshold=threshold, iou_min=iou, options=runner_options(threads, device),
                           montage_size=worst, progress=progress, log=log)


def inspect(model: str | Path = "default", backend: str = "ort", *, threads: int = 1, runs: int = 50,
                  int8: bool = False, json_out: Path | None = None,
                  log: Callable[[str], None] = print) -> Inspection:
    """Per-op profile of `model` on `backend` (ort, openvino), like `fastdet inspect`: ops by precision, the
    slowest ops and, for an INT8 model, the verdict on why INT8 is (not) faster. `int8`: the INT8 model `fastdet
    bench --int8` runs on that backend (the embedded model's cached PTQ version, made on first use)."""
    from fastdet_cli.inspection import inspect_model as profile
    from fastdet_cli.outputs import check_output_file, write_json_atomic

    spec = resolve_backend(backend)
    check_output_file(json_out, "--json")
    if int8:
        from fastdet_cli.compress.defaults import int8_for

        model = str(int8_for(spec, None if model == "default" else model, log=log).path)
    result = profile(str(model), spec, threads, runs)
    if json_out is not None:
        write_json_atomic(json_out, result.as_dict())
    return result


def environment() -> Environment:
    """Backends (installed version or not, whether they run here), devices, Python, CPU flags and the defaults
    that follow from them, like `fastdet env`."""
    from fastdet_cli.environment import environment as survey

    return survey()


@dataclass
class FetchEntry:
    """Something `fetch` can download."""

    name: str
    kind: str  # "model" or "dataset"
    description: str
    cached: bool
    path: Path  # where it is (or will be) in the cache


def fetch_list() -> list[FetchEntry]:
    """What `fetch` can download, and whether it is in the cache already (`fastdet fetch --list`)."""
    from fastdet_cli.fetch import ENTRIES, target_dir

    return [FetchEntry(e.name, e.kind, e.description, target_dir(e.name).exists(), target_dir(e.name))
            for e in ENTRIES.values()]


def fetch(name: str, *, url: str | None = None, force: bool = False,
          progress: Callable[[str, int, int | None], None] | None = None) -> FetchEntry:
    """Download and unpack a listed model or dataset into the cache (`fastdet fetch --list`), like `fastdet
    fetch`; returns its entry, `path` the folder to pass as a model or dataset (`kind`). `url`: a mirror of a
    single-archive entry; `progress(file, bytes, total)`."""
    import dataclasses
    import difflib

    from fastdet_cli.fetch import ENTRIES, Part, fetch as download

    if name not in ENTRIES:
        close = difflib.get_close_matches(name, ENTRIES, n=1)
        raise FastdetError(f"unknown fetch name '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                           + "; see fastdet fetch --list")
    entry = ENTRIES[name]
    if url:
        if len(entry.parts) != 1:
            raise FastdetError(f"--url replaces a single archive; '{name}' has {len(entry.parts)} parts")
        entry = dataclasses.replace(entry, parts=(Part(url),))
    path = download(entry, progress, force=force)
    return FetchEntry(entry.name, entry.kind, entry.description, True, path)
