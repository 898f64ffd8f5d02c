"""`fastdet compress`: one-click auto-compression with PaddleSlim from one YAML file (FastDeploy's format).

The output folder holds the quantized `model.pdmodel` / `model.pdiparams` (engine paddleslim) or `model.onnx`
+ `fastdet.yml` (engine onnxruntime: ONNX Runtime's quantizer on the FP32 ONNX export, compress/ort_engine.py),
the FP32 model's deploy config copied byte for byte, and `compress_report.json`. It is written to a temporary folder and renamed when
complete, so an error or Ctrl-C leaves nothing half-written.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fastdet_cli.errors import FastdetError


@dataclass
class CompressResult:
    output_dir: Path
    report: dict


def compress(config_path: Path, method: str | None = None, save_dir: Path | None = None, devices: str = "cpu",
             eval_dataset: str | None = None, log=print, engine: str | None = None) -> CompressResult:
    from fastdet_cli.compress.common import (FeedSamples, Output, copy_deploy_config, dir_size, image_list,
                                             versions, write_report)
    from fastdet_cli.compress.config import load_compress_config, qat_image_dir
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paddle_program import conv_weights, feed_names, load_program, single_output_conv_weights
    from fastdet_cli.runtime.paddle import paddle_model_files

    cfg = load_compress_config(config_path, engine)
    method = (method or cfg.method_hint or "ptq").lower()
    if method not in ("ptq", "qat"):
        raise FastdetError(f"unknown method '{method}' (ptq or qat)")
    if cfg.engine == "onnxruntime" and method != "ptq":
        raise FastdetError("engine onnxruntime does post-training quantization only; QAT (with distillation) "
                           "trains the Paddle program: use engine paddleslim")
    if devices not in ("cpu", "gpu"):
        raise FastdetError(f"--devices must be cpu or gpu, got '{devices}'")
    if devices == "gpu":
        from fastdet_cli.runtime.registry import require_gpu

        require_gpu("compress --devices gpu")
    source = resolve_model(cfg.model_dir)
    if source.format != "paddle":
        raise FastdetError(f"{source.path}: compression takes a Paddle inference model (model.pdmodel)")
    eval_spec = eval_dataset or cfg.eval_dataset
    if eval_spec:  # a wrong dataset fails now, not after minutes of PTQ
        from fastdet_cli.data.dataset import resolve_dataset

        resolve_dataset(eval_spec)
    save_dir = Path(save_dir or Path(config_path).parent / f"{source.dir.name}_{method}")
    pdmodel, _ = paddle_model_files(source.dir)
    prog = load_program(pdmodel)
    feeds = feed_names(prog)
    kept_float = single_output_conv_weights(prog)
    convs = conv_weights(prog)
    tensors = {v.name for b in prog.blocks for v in b.vars}  # PTQ skips ops reading any named tensor
    for key, section, known in (("PTQ.skip_tensor_list", cfg.ptq, tensors),
                                ("QuantAware.skip_tensor_list", cfg.quant, convs)):
        unknown = [w for w in section.get("skip_tensor_list", []) if w not in known]
        if unknown:
            raise FastdetError(f"{config_path}: {key}: {', '.join(map(str, unknown))} is not a "
                               f"{'tensor' if known is tensors else 'convolution weight'} of {source.dir.name} "
                               f"(e.g. {next(iter(convs), '?')})")

    limit = cfg.image_limit
    if method == "ptq" and limit is None:
        limit = int(cfg.ptq.get("batch_size", 8)) * int(cfg.ptq.get("batch_nums", 10))
    files = image_list(cfg.calib_images if method == "ptq" else qat_image_dir(cfg), limit)
    samples = FeedSamples(source, files, feeds)
    log(f"{method.upper()} of {source.dir} on {len(files)} images; preprocessing from "
        f"{source.deploy.path.name}: {samples.pipeline}")
    if kept_float and cfg.engine == "paddleslim":
        log(f"kept in float (single-output-channel convs, which paddle2onnx cannot export quantized): "
            f"{', '.join(kept_float)}")

    out = Output(save_dir)
    try:
        t0 = time.perf_counter()
        if cfg.engine == "onnxruntime":
            from fastdet_cli.compress.ort_engine import run_ort_ptq
            from fastdet_cli.compress.ptq import search_dataset_spec

            spec = search_dataset_spec(cfg) if cfg.ptq.get("max_map_drop") is not None else None
            settings, search, _ = run_ort_ptq(cfg, source, samples, out.tmp, spec, log)
            kept_float = settings["nodes_to_exclude"]
        elif method == "ptq":
            from fastdet_cli.compress.ptq import run_ptq_with_search

            settings, search = run_ptq_with_search(cfg, source, samples, out.tmp, kept_float, log)
            if search:
                kept_float = kept_float + search["kept_float"]
        else:
            search = None
            from fastdet_cli.compress.qat import program_eval_callback, run_qat

            callback = None
            if eval_spec:
                from fastdet_cli.data.dataset import resolve_dataset

                callback = program_eval_callback(source, resolve_dataset(eval_spec))
            # ACT trains a BN-folded copy (paddle2onnx mis-exports conv → quantize → batch_norm, see
            # qat.fuse_conv_bn), and has no skip list: the single-channel convs and the user's
            # QuantAware.skip_tensor_list are marked skip_quant in that copy
            kept_float = kept_float + [w for w in cfg.quant.get("skip_tensor_list", []) if w not in kept_float]
            src_dir = out.tmp.with_name(out.tmp.name + "-src")
            try:
                qat_source = _qat_source(source, kept_float, src_dir, log)
                settings = run_qat(cfg, qat_source, samples, out.tmp, callback, devices)
            finally:
                shutil.rmtree(src_dir, ignore_errors=True)
        seconds = time.perf_counter() - t0
        written = "model.onnx" if cfg.engine == "onnxruntime" else "model.pdmodel"
        if not (out.tmp / written).exists():
            raise FastdetError(f"{cfg.engine} finished without writing {written}")
        rewritten = []
        if cfg.engine == "paddleslim" and any(d[0] == 1 and d[2:] == [1, 1] for d in convs.values()):
            from fastdet_cli.paddle_program import rewrite_integer_weight_convs

            rewritten = rewrite_integer_weight_convs(out.tmp)
            if rewritten:
                log(f"float 1×1 convolution(s) with integer weights ({', '.join(sorted(set(rewritten)))}: a DFL "
                    "projection) written as elementwise_mul + reduce_sum, so Paddle Inference's oneDNN INT8 "
                    "passes take the program")
        deploy_copy = copy_deploy_config(source, out.tmp)
        paddle_int8 = None
        if cfg.engine == "paddleslim" and devices == "cpu":
            from fastdet_cli.compress.paddle_int8 import choose_int8_ops

            paddle_int8 = choose_int8_ops(out.tmp, log=log)
        report = {
            "method": method, "engine": cfg.engine,
            "method_label": ("PTQ (ORT)" if cfg.engine == "onnxruntime" else "PTQ") if method == "ptq"
            else "QAT-distillation",
            "format": "onnx" if cfg.engine == "onnxruntime" else "paddle",
            "config_file": str(Path(config_path).resolve()), "config_resolved": settings,
            "model_fp32": str(source.dir), "deploy_config": deploy_copy.name,
            "input_list": feeds, "preprocess": samples.pipeline,
            "images": {"source": cfg.calib_images if method == "ptq" else qat_image_dir(cfg), "count": len(files),
                       "first": [str(f) for f in files[:3]]},
            "kept_float": kept_float, "sensitivity_search": search,
            "integer_weight_convs_rewritten": sorted(set(rewritten)),
            "paddle_int8_ops": paddle_int8["choice"] if paddle_int8 else None,
            "paddle_int8_ops_measured": paddle_int8,
            "size_bytes": {"fp32": dir_size(source.dir), "int8": dir_size(out.tmp)},  # model files only
            "seconds": round(seconds, 2), "devices": devices, "versions": versions(),
        }
        write_report(out.tmp, report)
        final = out.commit()
    except BaseException:
        out.discard()
        raise
    return CompressResult(final, report)


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
