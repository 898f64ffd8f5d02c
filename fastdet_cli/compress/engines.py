"""The quantization engines of `fastdet compress`, one `ENGINES` row each: a function `(job, out_dir, log) ->
Quantized` that leaves its model file in `out_dir`, and what it writes, in which format, for which backend.
prepare, finalize, the report, the atomic move and the mAP step are shared (compress/__init__.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

from fastdet_cli.compress.config import QuantEngine
from fastdet_cli.compress.job import Engine, Job, Quantized
from fastdet_cli.runtime.registry import BACKENDS


def _paddleslim_ptq(job: Job, out_dir: Path, log) -> Quantized:
    from fastdet_cli.compress.ptq import run_ptq_with_search

    settings, search = run_ptq_with_search(job.cfg, job.source, job.samples, out_dir, job.kept_float, log)
    return Quantized(settings, search, job.kept_float + (search["kept_float"] if search else []))


def _paddleslim_qat(job: Job, out_dir: Path, log) -> Quantized:
    from fastdet_cli.compress.qat import program_eval_callback, run_qat

    metric = None
    if job.holdout:  # agreement with the FP32 model on the held-back calibration images (never the eval set)
        from fastdet_cli.agreement import with_reference
        from fastdet_cli.data.dataset import ImageList

        data = with_reference(ImageList.of(job.holdout), job.source, job.engine.backend)
        metric = program_eval_callback(job.source, data)
        log(f"QAT trains on {len(job.samples)} images and keeps the weights that agree best with FP32 on "
            f"{len(job.holdout)} held-back ones")
    # ACT trains a BN-folded copy (paddle2onnx mis-exports conv → quantize → batch_norm, see qat.fuse_conv_bn),
    # and has no skip list: the single-channel convs and the user's QuantAware.skip_tensor_list are marked
    # skip_quant in that copy
    kept = job.kept_float + [w for w in job.cfg.quant.get("skip_tensor_list", []) if w not in job.kept_float]
    src_dir = out_dir.with_name(out_dir.name + "-src")
    try:
        settings = run_qat(job.cfg, _qat_source(job.source, kept, src_dir, log), job.samples, out_dir, metric,
                           job.devices, log)
    finally:
        shutil.rmtree(src_dir, ignore_errors=True)
    settings["holdout_images"] = [p.name for p in job.holdout]
    return Quantized(settings, None, kept)


def _ort_ptq(job: Job, out_dir: Path, log) -> Quantized:
    return _ort_ptq_with_source(job, out_dir, log)[0]


def _ort_ptq_with_source(job: Job, out_dir: Path, log, keep_prepared: Path | None = None):
    """(Quantized, the FP32 ONNX model it was made from); the FP32 graph quantized kept at `keep_prepared`."""
    from fastdet_cli.compress.ort_engine import run_ort_ptq
    from fastdet_cli.compress.ptq import search_dataset_spec

    spec = search_dataset_spec(job.cfg) if job.cfg.ptq.get("max_map_drop") is not None else None
    settings, search, fp32 = run_ort_ptq(job.cfg, job.source, job.calibration, out_dir, spec, log, job.statistics,
                                         keep_prepared)
    return Quantized(settings, search, settings["nodes_to_exclude"]), fp32


def _ort_qat(job: Job, out_dir: Path, log) -> Quantized:
    """The form's PTQ model (as `_ort_ptq`), then trained with distillation (compress/qdq_qat.py), the held-back
    calibration images judging each epoch on the form's runtime."""
    from fastdet_cli.compress.qdq_qat import DEFAULT_BATCH, DEFAULT_PATIENCE, train_qdq
    from fastdet_cli.compress.samples import FeedSamples

    prepared = out_dir.with_name(out_dir.name + "-prepared.onnx")  # beside the output folder, removed below
    q, fp32 = _ort_ptq_with_source(job, out_dir, log, prepared)
    holdout = FeedSamples(job.source, job.holdout, job.feeds) if job.holdout else None
    judge = None
    if job.holdout:
        from fastdet_cli.agreement import with_reference
        from fastdet_cli.compress.variants import evaluate_map
        from fastdet_cli.data.dataset import ImageList

        runtime = job.cfg.target.backend_spec or BACKENDS["ort"]
        data = with_reference(ImageList.of(job.holdout), job.source, BACKENDS["ort"])

        def judge(model_path: Path) -> float:
            return evaluate_map(model_path.parent, data, runtime)

        log(f"QAT trains on {len(job.samples)} images and keeps the epoch that agrees best with FP32 on "
            f"{len(job.holdout)} held-back ones ({runtime.name})")
    g = job.cfg.raw.get("Global", {})
    try:
        q.settings["qat"] = train_qdq(out_dir / "model.onnx", fp32.path, job.samples, holdout, judge,
                                      job.cfg.train, g.get("qat_augment", True),
                                      g.get("qat_batch_size", DEFAULT_BATCH), g.get("qat_patience", DEFAULT_PATIENCE),
                                      log, prepared, not g.get("qat_hold_scales", False),
                                      g.get("qat_learn_rounding", True))
    finally:
        prepared.unlink(missing_ok=True)
    q.settings["holdout_images"] = [p.name for p in job.holdout]
    return q


ENGINES: dict[tuple[str, str], Engine] = {(e.engine, e.method): e for e in (
    Engine(QuantEngine.PADDLESLIM, "ptq", "PTQ", _paddleslim_ptq, "model.pdmodel", "paddle", BACKENDS["paddle"],
           "Paddle Inference"),
    Engine(QuantEngine.PADDLESLIM, "qat", "QAT-distillation", _paddleslim_qat, "model.pdmodel", "paddle",
           BACKENDS["paddle"], "Paddle Inference"),
    Engine(QuantEngine.ONNXRUNTIME, "ptq", "PTQ (ORT)", _ort_ptq, "model.onnx", "onnx", BACKENDS["ort"],
           "ONNX Runtime"),
    Engine(QuantEngine.ONNXRUNTIME, "qat", "QAT-distillation (ORT)", _ort_qat, "model.onnx", "onnx",
           BACKENDS["ort"], "ONNX Runtime"),
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
