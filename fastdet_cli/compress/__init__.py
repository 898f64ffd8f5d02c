"""`fastdet compress`: one-click auto-compression from one YAML file (FastDeploy's format), in three stages.

1. `prepare`: the config read and checked, the model and datasets resolved, the output path checked, the
   calibration/training images listed — every input error before any minute of work.
2. `quantize`: the engine from `ENGINES` (PaddleSlim PTQ, PaddleSlim QAT with distillation, ONNX Runtime PTQ)
   writes the quantized model into a temporary folder.
3. `finalize`: Paddle program fix-ups, the FP32 deploy config copied byte for byte, compress_report.json, the mAP
   of FP32 vs INT8 on the runtime the output is made for (when asked), then the folder renamed into place
   (outputs.atomic_dir), so an error or Ctrl-C leaves nothing half-written.

Adding an engine: a `quantize` function with the signature of `_paddleslim_ptq` and one `ENGINES` row.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastdet_cli import distributed, interrupt
from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:  # the real types, without importing them (and what they import) at start-up
    from fastdet_cli.compress.calibration import Statistics
    from fastdet_cli.compress.common import FeedSamples
    from fastdet_cli.compress.config import CompressConfig
    from fastdet_cli.det.model import ModelSource


@dataclass
class CompressResult:
    output_dir: Path | None  # None on the ranks > 0 of a distributed run (rank 0 writes)
    report: dict | None


@dataclass(frozen=True)
class Engine:
    """A quantization engine × method: what runs, what it writes, and the runtime its output is made for."""

    engine: str  # Global.engine
    method: str  # ptq | qat
    label: str  # report's method_label
    quantize: Callable  # (job, out_dir, log) -> Quantized
    writes: str  # the model file it must leave in the output folder
    format: str  # "paddle" | "onnx"
    backend: str  # the fastdet backend the output is made for: mAP is measured there
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


@dataclass
class Quantized:
    settings: dict  # the engine's resolved settings (report: config_resolved)
    search: dict | None  # the sensitivity search's record
    kept_float: list[str]
    seconds: float = 0.0


def default_save_dir(config_path: Path, method: str) -> Path:
    """Where compress writes without --save-dir: a folder named after the config file in the current directory
    (`./<config name>`, with `_<method>` added when the name does not say it), never beside the config: the
    shipped configs live inside the package and configs/, and two configs must not overwrite one output."""
    stem = Path(config_path).stem
    return Path.cwd() / (stem if method in stem.lower().split("_") else f"{stem}_{method}")


def prepare(config_path: Path, method: str | None = None, save_dir: Path | None = None, devices: str = "cpu",
            eval_dataset: str | None = None, engine: str | None = None, log=print) -> Job:
    from fastdet_cli.compress.common import FeedSamples, image_list
    from fastdet_cli.compress.config import load_compress_config, qat_image_dir
    from fastdet_cli.paddle_program import (conv_weights, feed_names, load_program, paddle_model_files,
                                            single_output_conv_weights, var_dims)

    cfg = load_compress_config(config_path, engine)
    method = (method or cfg.method_hint or "ptq").lower()
    if method not in ("ptq", "qat"):
        raise FastdetError(f"unknown method '{method}' (ptq or qat)")
    if (cfg.engine, method) not in ENGINES:
        names = {"ptq": "post-training quantization", "qat": "quantization-aware training"}
        done = " or ".join(names[m] for e, m in ENGINES if e == cfg.engine)
        raise FastdetError(f"engine {cfg.engine} does {done} only; QAT (with distillation) trains the Paddle "
                           "program: use engine paddleslim")
    if devices not in ("cpu", "gpu"):
        raise FastdetError(f"--devices must be cpu or gpu, got '{devices}'")
    if devices == "gpu":
        from fastdet_cli.runtime.registry import require_gpu

        require_gpu("compress --devices gpu")
    source = original = _source(cfg)
    eval_spec = eval_dataset or cfg.eval_dataset
    if eval_spec:  # a wrong dataset fails now, not after minutes of PTQ
        from fastdet_cli.data.dataset import resolve_eval_data

        resolve_eval_data(eval_spec)
    save_dir = Path(save_dir or default_save_dir(config_path, method))
    if source.format == "onnx" and cfg.engine == "paddleslim":  # the reference's route: a validated conversion
        source = _converted(source, cfg, log)
    if source.format == "onnx":
        feeds, convs, kept_float = _onnx_feeds(source.path), {}, []
    else:
        prog = load_program(paddle_model_files(source.dir)[0])
        feeds, convs, kept_float = feed_names(prog), conv_weights(prog), single_output_conv_weights(prog)
        if method == "qat":  # a fixed batch dimension must match the training batch (else PaddleSlim's traceback)
            batch = int(cfg.raw.get("Global", {}).get("qat_batch_size", 4))
            for name in feeds[:1]:  # the image (Paddle's feed check lets scale_factor's [1, 2] take a batch)
                dims = var_dims(prog, name)
                if dims and dims[0] > 0 and dims[0] != batch:
                    raise FastdetError(f"{config_path}: the model's input '{name}' has a fixed batch of {dims[0]}; "
                                       f"set Global.qat_batch_size: {dims[0]} (it is {batch})")
        tensors = {v.name for b in prog.blocks for v in b.vars}  # PTQ skips ops reading any named tensor
        for key, section, known in (("PTQ.skip_tensor_list", cfg.ptq, tensors),
                                    ("QuantAware.skip_tensor_list", cfg.quant, convs)):
            unknown = [w for w in section.get("skip_tensor_list", []) if w not in known]
            if unknown:
                raise FastdetError(f"{config_path}: {key}: {', '.join(map(str, unknown))} is not a "
                                   f"{'tensor' if known is tensors else 'convolution weight'} of "
                                   f"{source.dir.name} (e.g. {next(iter(convs), '?')})")
    limit = cfg.image_limit
    if method == "ptq" and limit is None:
        limit = int(cfg.ptq.get("batch_size", 8)) * int(cfg.ptq.get("batch_nums", 10))
    images = cfg.calib_images if method == "ptq" else qat_image_dir(cfg)
    files = image_list(images, limit)
    world = distributed.world()
    shards = None
    if world.size > 1:  # each rank trains on its own share; equal shares, so every rank takes as many steps
        if method != "qat":
            raise FastdetError(f"a distributed run ({world.size} processes) is for QAT; {method.upper()} runs in one "
                               "process (drop paddle.distributed.launch)")
        per = len(files) // world.size
        if per == 0:
            raise FastdetError(f"{len(files)} training images cannot be split between {world.size} processes")
        shards = [len(files[r::world.size][:per]) for r in range(world.size)]
        files = files[world.rank::world.size][:per]
        log(world.describe() + f"; {per} images per rank")
    job = Job(Path(config_path), cfg, ENGINES[(cfg.engine, method)], devices, source, save_dir, eval_spec, feeds,
              kept_float, convs, images, FeedSamples(source, files, feeds), world, shards, original)
    log(f"{method.upper()} of {source.dir} on {len(files)} images; preprocessing from "
        f"{source.deploy.path.name}: {job.samples.pipeline}")
    if job.kept_float and cfg.engine == "paddleslim":
        log(f"kept in float (single-output-channel convs, which paddle2onnx cannot export quantized): "
            f"{', '.join(job.kept_float)}")
    return job


def _source(cfg):
    """The model the config names, in the format it says (Global.format, Global.model_filename)."""
    from fastdet_cli.det.model import resolve_model

    path = cfg.model_dir
    if cfg.model_filename and path != "default":
        path = str(Path(path) / cfg.model_filename)
    source = resolve_model(path)
    if source.format != cfg.format:
        hint = " (set Global.format: onnx)" if source.format == "onnx" else ""
        raise FastdetError(f"{cfg.path}: Global.format is {cfg.format} but {source.path} is a {source.format} "
                           f"model{hint}")
    return source


def _converted(source, cfg, log):
    """An ONNX model as a Paddle program (compress/onnx_to_paddle.py): converted with x2paddle, its decomposed
    hard-swishes fused back into single ops, checked against ONNX Runtime on the first calibration image."""
    from fastdet_cli.compress.common import FeedSamples, image_list
    from fastdet_cli.compress.onnx_to_paddle import converted

    feeds = _onnx_feeds(source.path)
    first = FeedSamples(source, image_list(cfg.calib_images, 1), feeds)[0]
    program = converted(source, {k: v[None] for k, v in first.items()}, log)
    log(f"{source.path.name} runs as the Paddle program {program.dir} (x2paddle; matches ONNX Runtime within "
        f"{program.sidecar().get('validation_max_rel_diff')} of each output's range on a real image)")
    return program


def _onnx_feeds(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in init]


def quantize(job: Job, out_dir: Path, log=print) -> Quantized:
    t0 = time.perf_counter()
    result = job.engine.quantize(job, out_dir, log)
    result.seconds = time.perf_counter() - t0
    if job.world.is_main and not (out_dir / job.engine.writes).exists():  # PaddleSlim saves on rank 0 only
        raise FastdetError(f"{job.cfg.engine} finished without writing {job.engine.writes}")
    return result


def finalize(job: Job, q: Quantized, out_dir: Path, log=print, evaluate: bool = False) -> dict:
    """Fix-ups, deploy config, report and (with `evaluate` and a dataset) mAP FP32 vs INT8, in `out_dir`."""
    from fastdet_cli.compress.common import carry_paddle_notes, copy_deploy_config, dir_size, versions, write_report

    deploy_copy = copy_deploy_config(job.source, out_dir)  # first: the INT8 model is loadable from here on
    rewritten, paddle_int8 = [], None
    if job.engine.format == "paddle":
        carry_paddle_notes(job.source, out_dir)
        if any(d[0] == 1 and d[2:] == [1, 1] for d in job.convs.values()):
            from fastdet_cli.paddle_program import rewrite_integer_weight_convs

            rewritten = rewrite_integer_weight_convs(out_dir)
            if rewritten:
                log(f"float 1×1 convolution(s) with integer weights ({', '.join(sorted(set(rewritten)))}: a DFL "
                    "projection) written as elementwise_mul + reduce_sum, so Paddle Inference's oneDNN INT8 "
                    "passes take the program")
        if job.devices == "cpu":
            from fastdet_cli.compress.paddle_int8 import choose_int8_ops

            paddle_int8 = choose_int8_ops(out_dir, log=log)
    files = job.samples.files
    report = {
        "method": job.engine.method, "engine": job.engine.engine, "method_label": job.engine.label,
        "format": job.engine.format,
        "config_file": str(job.config_path.resolve()), "config_resolved": q.settings,
        "model_fp32": str((job.original or job.source).runner_path), "deploy_config": deploy_copy.name,
        "source_format": (job.original or job.source).format,
        "converted_fp32": str(job.source.dir) if job.original is not job.source else None,
        "input_list": job.feeds, "preprocess": job.samples.pipeline,
        "images": {"source": job.images_source, "count": len(files), "first": [str(f) for f in files[:3]]},
        "kept_float": q.kept_float, "sensitivity_search": q.search,
        "integer_weight_convs_rewritten": sorted(set(rewritten)),
        "paddle_int8_ops": paddle_int8["choice"] if paddle_int8 else None,
        "paddle_int8_ops_measured": paddle_int8,
        "size_bytes": {"fp32": dir_size(job.source.dir), "int8": dir_size(out_dir)},  # model files only
        "met": q.search.get("met") if q.search else None,  # the accuracy budget (PTQ.max_map_drop), when set
        "seconds": round(q.seconds, 2), "devices": job.devices, "versions": versions(), "map": None,
        "distributed": None if job.world.size == 1 else {
            "world_size": job.world.size, "images_per_rank": job.shards,
            **(q.settings.get("distributed") or {"parameter_averaging": "by Paddle's fleet (GPUs)"})},
    }
    write_report(out_dir, report)  # before mAP: Paddle Inference reads paddle_int8_ops from it
    if report["met"] is False:
        from fastdet_cli.artifacts import budget_warning

        log(budget_warning(out_dir, str(job.save_dir)) or "warning: the accuracy budget was not met")
    if evaluate and job.eval_spec:
        report["map"] = map_fp32_vs_int8(job, out_dir, log)
        write_report(out_dir, report)
    return report


def map_fp32_vs_int8(job: Job, int8_dir: Path, log=print) -> dict:
    """COCO mAP of the FP32 and the INT8 model on the runtime the INT8 model is made for (CPU); on an image folder
    without annotations, agreement mAP with the FP32 model's detections (agreement.py)."""
    from fastdet_cli.agreement import labelled, metric_name
    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate

    from fastdet_cli.compress.config import DEPLOY_TARGETS

    # an ONNX form is measured on the runtime it is made for (where that runs on a CPU)
    backend = (DEPLOY_TARGETS[job.cfg.deploy_backend].backend if job.engine.format == "onnx" else None) \
        or job.engine.backend
    ds = labelled(job.eval_spec, job.source, backend)
    from fastdet_cli.runtime.registry import get_backend

    runtime = job.engine.runtime_label if backend == job.engine.backend else \
        get_backend(backend).description.split(" (")[0]
    out = {"dataset": ds.label, "backend": backend, "runtime": runtime,
           "metric": metric_name(ds), "reference": ds.reference}
    for name, model in (("fp32", job.source), ("int8", int8_dir)):
        log(f"{metric_name(ds)} of the {name.upper()} model on {Path(ds.label).name} ({runtime})")
        with detector(model, backend) as det:
            res = coco_evaluate(det, ds)
        out[name] = {k: res.stats[k] for k in ("AP", "AP50", "AP75")}
    return out


def compress(config_path: Path, method: str | None = None, save_dir: Path | None = None, devices: str = "cpu",
             eval_dataset: str | None = None, log=print, engine: str | None = None,
             evaluate: bool = False) -> CompressResult:
    """prepare → quantize → finalize, written through a temporary folder renamed into place when complete.
    `evaluate`: also measure mAP FP32 vs INT8 on the eval dataset (`--eval` or Global.eval_dataset)."""
    from fastdet_cli.outputs import atomic_dir

    job = prepare(config_path, method, save_dir, devices, eval_dataset, engine, log)
    if not job.world.is_main:  # a distributed run: train, then leave the output to rank 0
        with atomic_dir(job.save_dir, commit=lambda tmp, final: None) as tmp:
            quantize(job, tmp, log)
            distributed.barrier()
        return CompressResult(None, None)
    with atomic_dir(job.save_dir) as tmp:
        if len(job.cfg.deploy_backends) > 1:
            report = _forms(job, tmp, log, evaluate)
        else:
            q = quantize(job, tmp, log)
            interrupt.check()  # the quantization passes swallow KeyboardInterrupt (bare except clauses)
            distributed.barrier()  # every rank has finished training before rank 0 writes
            report = finalize(job, q, tmp, log, evaluate)
    return CompressResult(job.save_dir.resolve(), report)


def _forms(job: Job, out_dir: Path, log, evaluate: bool) -> dict:
    """One INT8 form per deploy target (engine onnxruntime: ORT's graph quantizes convolution outputs too, OpenVINO's
    only their inputs), each a complete model folder `out_dir/<target>` with its own report; `out_dir`'s
    compress_report.json lists them (`forms`), and every command given `out_dir` runs the form made for its backend
    (artifacts.forms)."""
    import dataclasses

    from fastdet_cli.compress.common import write_report
    from fastdet_cli.compress.config import DEPLOY_TARGETS

    t0 = time.perf_counter()
    forms = {}
    stats = None
    if job.engine.engine == "onnxruntime":  # the images' statistics gathered once for every form
        from fastdet_cli.compress.calibration import Statistics

        stats = Statistics(job.samples, log)
    # the forms quantizing the most tensors first: their statistics cover the others'
    order = sorted(job.cfg.deploy_backends, key=lambda t: not DEPLOY_TARGETS[t].conv_outputs)
    for i, target in enumerate(order):
        log(f"form {i + 1} of {len(order)}: {target}")
        one = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, deploy_backend=target,
                                                               deploy_backends=(target,)), statistics=stats)
        (out_dir / target).mkdir()
        q = quantize(one, out_dir / target, log)
        interrupt.check()
        r = finalize(one, q, out_dir / target, log, evaluate)
        forms[target] = {"dir": target, "backend": DEPLOY_TARGETS[target].backend, "met": r["met"],
                         "seconds": r["seconds"], "map": r["map"],
                         "sensitivity_search": {k: (r["sensitivity_search"] or {}).get(k) for k in (
                             "chosen_drop_points", "max_drop_points", "chosen_runtime_ms", "chosen_fp32_runtime_ms",
                             "fp32_graph", "kept_float")} if r["sensitivity_search"] else None}
    met = [f["met"] for f in forms.values() if f["met"] is not None]
    report = {"method": job.engine.method, "engine": job.engine.engine, "method_label": job.engine.label,
              "format": job.engine.format, "config_file": str(job.config_path.resolve()),
              "model_fp32": str((job.original or job.source).runner_path),
              "forms": forms, "met": all(met) if met else None, "seconds": round(time.perf_counter() - t0, 2),
              "calibration_passes": stats.gathered if stats else None}
    write_report(out_dir, report)
    return report


# ---- the engines ------------------------------------------------------------------------------------------
def _paddleslim_ptq(job: Job, out_dir: Path, log) -> Quantized:
    from fastdet_cli.compress.ptq import run_ptq_with_search

    settings, search = run_ptq_with_search(job.cfg, job.source, job.samples, out_dir, job.kept_float, log)
    return Quantized(settings, search, job.kept_float + (search["kept_float"] if search else []))


def _paddleslim_qat(job: Job, out_dir: Path, log) -> Quantized:
    from fastdet_cli.compress.qat import program_eval_callback, run_qat

    callback = None
    if job.eval_spec:  # an image folder: agreement mAP with the FP32 model's detections
        from fastdet_cli.agreement import labelled

        callback = program_eval_callback(job.source, labelled(job.eval_spec, job.source, "paddle"))
    # ACT trains a BN-folded copy (paddle2onnx mis-exports conv → quantize → batch_norm, see qat.fuse_conv_bn),
    # and has no skip list: the single-channel convs and the user's QuantAware.skip_tensor_list are marked
    # skip_quant in that copy
    kept = job.kept_float + [w for w in job.cfg.quant.get("skip_tensor_list", []) if w not in job.kept_float]
    src_dir = out_dir.with_name(out_dir.name + "-src")
    try:
        settings = run_qat(job.cfg, _qat_source(job.source, kept, src_dir, log), job.samples, out_dir, callback,
                           job.devices)
    finally:
        shutil.rmtree(src_dir, ignore_errors=True)
    return Quantized(settings, None, kept)


def _ort_ptq(job: Job, out_dir: Path, log) -> Quantized:
    from fastdet_cli.compress.ort_engine import run_ort_ptq
    from fastdet_cli.compress.ptq import search_dataset_spec

    spec = search_dataset_spec(job.cfg) if job.cfg.ptq.get("max_map_drop") is not None else None
    settings, search, _ = run_ort_ptq(job.cfg, job.source, job.samples, out_dir, spec, log, job.statistics)
    return Quantized(settings, search, settings["nodes_to_exclude"])


ENGINES: dict[tuple[str, str], Engine] = {(e.engine, e.method): e for e in (
    Engine("paddleslim", "ptq", "PTQ", _paddleslim_ptq, "model.pdmodel", "paddle", "paddle", "Paddle Inference"),
    Engine("paddleslim", "qat", "QAT-distillation", _paddleslim_qat, "model.pdmodel", "paddle", "paddle",
           "Paddle Inference"),
    Engine("onnxruntime", "ptq", "PTQ (ORT)", _ort_ptq, "model.onnx", "onnx", "ort", "ONNX Runtime"),
)}


def _qat_source(source, skip_weights: list[str], tmp: Path, log):
    """The model ACT trains: `source` with conv + batch_norm folded, the convs reading `skip_weights` marked
    skip_quant."""
    from fastdet_cli.compress.qat import fuse_conv_bn
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paddle_program import mark_skip_quant

    shutil.rmtree(tmp, ignore_errors=True)
    folded = fuse_conv_bn(source, tmp)
    log(f"batch_norm folded into {folded} convolutions before QAT")
    if skip_weights:
        mark_skip_quant(tmp / "model.pdmodel", tmp / "model.pdmodel", skip_weights)
    return resolve_model(tmp)
