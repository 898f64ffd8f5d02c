"""`fastdet compress`: one-click auto-compression from one YAML file (FastDeploy's format), in three stages.

1. `prepare`: the config read and checked, the model and datasets resolved, the output path checked, the
   calibration/training images listed — every input error before any minute of work (compress/inputs.py).
2. `quantize`: the engine from `ENGINES` (PaddleSlim PTQ, PaddleSlim QAT with distillation, ONNX Runtime PTQ;
   compress/engines.py) writes the quantized model into a temporary folder.
3. `finalize`: Paddle program fix-ups, the FP32 deploy config copied byte for byte, compress_report.json (a
   `CompressReport`, compress/report.py), the mAP of FP32 vs INT8 on the runtime the output is made for (when
   asked), then the folder renamed into place (outputs.atomic_dir), so an error or Ctrl-C leaves nothing
   half-written.

Adding an engine: a `quantize` function with the signature of engines.py's `_paddleslim_ptq` and one `ENGINES` row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastdet_cli import distributed, interrupt
from fastdet_cli.compress.engines import ENGINES
from fastdet_cli.compress.job import Engine, Job, Quantized
from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:  # the real types, without importing them (and what they import) at start-up
    from fastdet_cli.compress.report import CompressReport, FormsReport, MapComparison

__all__ = ["ENGINES", "CompressResult", "Engine", "Job", "Quantized", "compress", "default_save_dir", "finalize",
           "prepare", "quantize"]


@dataclass
class CompressResult:
    """What `compress` made. `output_dir`: the output folder (None on the ranks > 0 of a distributed run: rank 0
    writes). `report`: its compress_report.json, a `CompressReport` (one INT8 model), or a `FormsReport` when the
    config asks for several deploy targets (one model folder per target, listed in `report.forms`), and then
    `form_reports` holds each form's own `CompressReport`."""

    output_dir: Path | None
    report: CompressReport | FormsReport | None
    form_reports: dict[str, CompressReport] = field(default_factory=dict)

    def models(self) -> list[tuple[str | None, Path, CompressReport]]:
        """Each INT8 model folder written: (its deploy target, None for a single model; its folder; its report)."""
        if self.form_reports:
            return [(t, self.output_dir / self.report.forms[t].dir, r) for t, r in self.form_reports.items()]
        return [(None, self.output_dir, self.report)] if self.report is not None else []


def default_save_dir(config_path: Path, method: str) -> Path:
    """Where compress writes without --save-dir: a folder named after the config file in the current directory
    (`./<config name>`, with `_<method>` added when the name does not say it), never beside the config: the
    shipped configs live inside the package and configs/, and two configs must not overwrite one output."""
    stem = Path(config_path).stem
    return Path.cwd() / (stem if method in stem.lower().split("_") else f"{stem}_{method}")


def prepare(config_path: Path, method: str | None = None, save_dir: Path | None = None, devices: str = "cpu",
            eval_dataset: str | None = None, engine: str | None = None, log=print) -> Job:
    """Stage 1: the config, method, devices, model, datasets, images and skip lists checked; an ONNX model for
    engine paddleslim converted to a Paddle program."""
    from fastdet_cli.compress import inputs
    from fastdet_cli.compress.config import load_compress_config, qat_image_dir
    from fastdet_cli.compress.samples import FeedSamples

    cfg = load_compress_config(config_path, engine)
    method = inputs.checked_method(cfg, method, ENGINES)
    inputs.check_devices(devices)
    source = original = inputs.model_source(cfg)
    eval_spec = eval_dataset or cfg.eval_dataset
    if eval_spec:  # a wrong dataset fails now, not after minutes of PTQ
        from fastdet_cli.data.dataset import resolve_eval_data

        resolve_eval_data(eval_spec)
    save_dir = Path(save_dir or default_save_dir(config_path, method))
    if source.format == "onnx" and cfg.engine.paddleslim:  # the reference's route: a validated conversion
        source = inputs.converted(source, cfg, log)
    feeds, convs, kept_float = inputs.model_facts(source, cfg, method)
    images = cfg.calib_images if method == "ptq" else qat_image_dir(cfg)
    world = distributed.world()
    files = all_images = inputs.image_files(cfg, method, images)
    holdout: list[Path] = []
    if method == "qat":  # the same slice on every rank, before the shares
        from fastdet_cli.compress.qat_data import split_holdout

        files, holdout = split_holdout(files)
    files, shards = inputs.rank_share(files, world, method, log)
    job = Job(Path(config_path), cfg, ENGINES[(cfg.engine, method)], devices, source, save_dir, eval_spec, feeds,
              kept_float, convs, images, FeedSamples(source, files, feeds), world, shards, original,
              holdout=holdout, all_images=all_images)
    log(f"{method.upper()} of {source.dir} on {len(files)} images; preprocessing from "
        f"{source.deploy.path.name}: {job.samples.pipeline}")
    if job.kept_float and cfg.engine.paddleslim:
        log(f"kept in float (single-output-channel convs, which paddle2onnx cannot export quantized): "
            f"{', '.join(job.kept_float)}")
    return job


def quantize(job: Job, out_dir: Path, log=print) -> Quantized:
    """Stage 2: the job's engine writes its model into `out_dir`."""
    t0 = time.perf_counter()
    result = job.engine.quantize(job, out_dir, log)
    result.seconds = time.perf_counter() - t0
    if job.world.is_main and not (out_dir / job.engine.writes).exists():  # PaddleSlim saves on rank 0 only
        raise FastdetError(f"{job.cfg.engine} finished without writing {job.engine.writes}")
    return result


def finalize(job: Job, q: Quantized, out_dir: Path, log=print, evaluate: bool = False) -> CompressReport:
    """Stage 3: fix-ups, deploy config, report and (with `evaluate` and a dataset) mAP FP32 vs INT8, in `out_dir`."""
    from fastdet_cli.compress.output_folder import copy_deploy_config
    from fastdet_cli.compress.report import write_report

    deploy_copy = copy_deploy_config(job.source, out_dir)  # first: the INT8 model is loadable from here on
    rewritten, paddle_int8 = _paddle_fixups(job, out_dir, log) if job.engine.format == "paddle" else ([], None)
    report = _report(job, q, out_dir, deploy_copy.name, rewritten, paddle_int8)
    write_report(out_dir, report)  # before mAP: Paddle Inference reads paddle_int8_ops from it
    if report.met is False:
        from fastdet_cli.artifacts import budget_warning

        log(budget_warning(out_dir, str(job.save_dir)) or "warning: the accuracy budget was not met")
    if evaluate and job.eval_spec:
        report.map = map_fp32_vs_int8(job, out_dir, log)
        write_report(out_dir, report)
    return report


def _paddle_fixups(job: Job, out_dir: Path, log) -> tuple[list[str], dict | None]:
    """A quantized Paddle program made ready for Paddle Inference: the FP32 program's notes carried over, float 1×1
    convolutions with integer weights rewritten, and (CPU) the oneDNN INT8 op set measured. Returns (the rewritten
    convolutions' weights, the op-set measurement or None)."""
    from fastdet_cli.compress.output_folder import carry_paddle_notes

    carry_paddle_notes(job.source, out_dir)
    rewritten, paddle_int8 = [], None
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
    return rewritten, paddle_int8


def _report(job: Job, q: Quantized, out_dir: Path, deploy_config: str, rewritten: list[str],
            paddle_int8: dict | None) -> CompressReport:
    """The model folder's report, before its mAP is measured."""
    from fastdet_cli.compress.output_folder import dir_size
    from fastdet_cli.compress.report import CompressReport, Distributed, Images, SizeBytes, versions

    files = job.samples.files
    fp32 = job.original or job.source
    return CompressReport(
        method=job.engine.method, engine=str(job.engine.engine), method_label=job.engine.label,
        format=job.engine.format, config_file=str(job.config_path.resolve()), config_resolved=q.settings,
        model_fp32=str(fp32.runner_path), deploy_config=deploy_config, source_format=fp32.format,
        converted_fp32=str(job.source.dir) if job.original is not job.source else None,
        input_list=job.feeds, preprocess=job.samples.pipeline,
        images=Images(job.images_source, len(files), [str(f) for f in files[:3]]),
        kept_float=q.kept_float, sensitivity_search=q.search,
        integer_weight_convs_rewritten=sorted(set(rewritten)),
        paddle_int8_ops=paddle_int8["choice"] if paddle_int8 else None, paddle_int8_ops_measured=paddle_int8,
        size_bytes=SizeBytes(dir_size(job.source.dir), dir_size(out_dir)),  # model files only
        met=q.search.get("met") if q.search else None,  # the accuracy budget (PTQ.max_map_drop), when set
        seconds=round(q.seconds, 2), devices=job.devices, versions=versions(), map=None,
        distributed=None if job.world.size == 1 else Distributed(
            job.world.size, job.shards,
            q.settings.get("distributed") or {"parameter_averaging": "by Paddle's fleet (GPUs)"}))


def map_fp32_vs_int8(job: Job, int8_dir: Path, log=print) -> MapComparison:
    """COCO mAP of the FP32 and the INT8 model on the runtime the INT8 model is made for (CPU); on an image folder
    without annotations, agreement mAP with the FP32 model's detections (agreement.py)."""
    from fastdet_cli.agreement import labelled, metric_name
    from fastdet_cli.artifacts import detector
    from fastdet_cli.compress.report import ApStats, MapComparison
    from fastdet_cli.evaluate.coco import coco_evaluate

    # an ONNX form is measured on the runtime it is made for (where that runs on a CPU)
    spec = (job.cfg.target.backend_spec if job.engine.format == "onnx" else None) or job.engine.backend
    ds = labelled(job.eval_spec, job.source, spec)
    runtime = job.engine.runtime_label if spec == job.engine.backend else spec.description.split(" (")[0]
    stats = {}
    for name, model in (("fp32", job.source), ("int8", int8_dir)):
        log(f"{metric_name(ds)} of the {name.upper()} model on {Path(ds.label).name} ({runtime})")
        with detector(model, spec) as det:
            res = coco_evaluate(det, ds)
        stats[name] = ApStats(res.stats["AP"], res.stats["AP50"], res.stats["AP75"])
    return MapComparison(ds.label, spec.name, runtime, metric_name(ds), ds.reference, stats["fp32"], stats["int8"])


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
            report, form_reports = _forms(job, tmp, log, evaluate)
        else:
            q = quantize(job, tmp, log)
            interrupt.check()  # the quantization passes swallow KeyboardInterrupt (bare except clauses)
            distributed.barrier()  # every rank has finished training before rank 0 writes
            report, form_reports = finalize(job, q, tmp, log, evaluate), {}
    return CompressResult(job.save_dir.resolve(), report, form_reports)


def _forms(job: Job, out_dir: Path, log, evaluate: bool) -> tuple[FormsReport, dict[str, CompressReport]]:
    """One INT8 form per deploy target (engine onnxruntime: ORT's graph quantizes convolution outputs too, OpenVINO's
    only their inputs), each a complete model folder `out_dir/<target>` with its own report; `out_dir`'s
    compress_report.json lists them (`forms`), and every command given `out_dir` runs the form made for its backend
    (artifacts.forms). Returns that report and each form's own."""
    import dataclasses

    from fastdet_cli.compress.report import FormSummary, FormsReport, write_report

    t0 = time.perf_counter()
    reports: dict[str, CompressReport] = {}
    stats = None
    if job.engine.engine.ort:  # the images' statistics gathered once for every form
        from fastdet_cli.compress.calibration import Statistics

        stats = Statistics(job.calibration, log)
    # the forms quantizing the most tensors first: their statistics cover the others'
    order = sorted(job.cfg.targets, key=lambda t: not t.conv_outputs)
    for i, target in enumerate(order):
        log(f"form {i + 1} of {len(order)}: {target.name}")
        one = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, deploy_backend=target.name,
                                                               deploy_backends=(target.name,)), statistics=stats)
        (out_dir / target.name).mkdir()
        q = quantize(one, out_dir / target.name, log)
        interrupt.check()
        reports[target.name] = finalize(one, q, out_dir / target.name, log, evaluate)
    forms = {t.name: FormSummary.of(t, reports[t.name]) for t in order}
    met = [f.met for f in forms.values() if f.met is not None]
    report = FormsReport(job.engine.method, str(job.engine.engine), job.engine.label, job.engine.format,
                         str(job.config_path.resolve()), str((job.original or job.source).runner_path), forms,
                         all(met) if met else None, round(time.perf_counter() - t0, 2),
                         stats.gathered if stats else None)
    write_report(out_dir, report)
    return report, reports
