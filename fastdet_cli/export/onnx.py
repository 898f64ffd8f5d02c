"""Paddle inference model → ONNX with paddle2onnx (in a subprocess), multiclass NMS cut out of the graph,
and every export validated against Paddle Inference on the same input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastdet_cli.det.model import SIDECAR, ModelSource
from fastdet_cli.errors import FastdetError
from fastdet_cli.export.targets import DEFAULT_TARGET, EXPORT_TARGETS, ONNX_TARGETS, OnnxTarget, made_by_ort
from fastdet_cli.outputs import atomic_dir
from fastdet_cli.onnx_graph import cut_nms
from fastdet_cli.paddle_program import QUANT_OPS, check_paddle_model, paddle_model_files

OPSET = 13
EXPORT_VERSION = 3  # bumped when the same source exports differently (cached exports are keyed on it); 2: 7-bit
#                     weights; 3: weight bits from the CPU (also in the cache key), INT8 check before NMS


@dataclass
class ExportResult:
    output_dir: Path
    onnx_path: Path
    nms_removed: bool
    nms: dict | None
    quantized: bool
    activation_uint8: bool = False
    weight_bits: int | None = None  # quantized: 7 when the weight range was reduced
    weight_bits_reason: str | None = None
    max_diff: dict[str, float] = field(default_factory=dict)  # INT8: the check's figures (export/int8_check.py)
    int8_tolerances: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    target: str = DEFAULT_TARGET


def run_paddle2onnx(pdmodel: Path, pdiparams: Path, save_file: Path | None,
                    deploy_backend: str = "onnxruntime") -> dict:
    """Run the worker process; a crash or a missing output file becomes one clear FastdetError."""
    cmd = [sys.executable, "-m", "fastdet_cli.export.p2o_worker", str(pdmodel), str(pdiparams),
           str(save_file) if save_file else "-", str(OPSET), deploy_backend]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                    os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-3:]
        how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
        if "No module named" in proc.stderr and "paddle" in proc.stderr:
            raise FastdetError("export needs paddlepaddle and paddle2onnx: in the fastdet clone, "
                               "pip install -e '.[paddle]'")
        raise FastdetError(f"paddle2onnx {how} on {pdmodel}: {' | '.join(tail)[-400:]}")
    if save_file and not save_file.exists():
        raise FastdetError(f"paddle2onnx reported success but wrote no file ({save_file})")
    return json.loads(lines[-1])


TARGETS = EXPORT_TARGETS  # the flavours a Paddle program is exported in (export/targets.py)
# FP32 exports: no value off by more than 1e-3 of the output's range (scores: 0.001; boxes of a 640-px model:
# ~0.5 px). Trained models agree to ~1e-6; a random-weight PP-YOLOE-l, whose activations reach ±5000, moves
# 0.5% of its box coordinates by more than 1e-4 relative (up to 0.13 px) by float rounding alone; a wrong
# conversion (preprocessing, scale factor, an op) moves them by pixels.
FP32_TOL = 1e-3


def export_onnx(source: ModelSource, output_dir: Path, remove_nms: bool = True, int8: bool = False,
                validate: bool = True, ort_u8: bool = True, weight_bits: int | None = None,
                target: str = DEFAULT_TARGET) -> ExportResult:
    """Export `source` (a Paddle model) to `output_dir`/model.onnx with its deploy config and a fastdet.yml
    sidecar; written into a temporary folder and renamed into place when complete. For quantized models,
    `ort_u8` moves activation Q/DQ pairs to uint8 (export/qdq.py), same function; `weight_bits=7` limits the
    weights to 7 bits so CPUs without VNNI do not saturate (export/qdq.py: reduce_weight_range); 8 keeps them;
    None decides from this CPU and the target (machine.int8_weight_bits: 8 with VNNI or for TensorRT).
    `target="tensorrt"`: the TensorRT flavour — PaddleSlim's Q/DQ on convolution inputs (TensorRT's explicit
    quantization placement) with int8 activations at zero point 0, 8-bit per-channel weights on axis 0, no
    quantized biases, NMS cut — held against TensorRT's ONNX parser rules
    (export/trt_check.py); any problem is an error and nothing is written."""
    flavour, ort_u8, weight_bits, bits_reason = _flavour_settings(target, ort_u8, weight_bits)
    pdmodel, pdiparams = _checked_paddle_files(source)
    output_dir = output_dir.resolve()
    with atomic_dir(output_dir) as tmp:
        full, final = tmp / "model_full.onnx", tmp / "model.onnx"
        # paddle2onnx's own "tensorrt" mode drops every Q/DQ pair (it expects a calibration table) and writes NMS as
        # a TensorRT plugin: its "onnxruntime" mode is the explicit int8 Q/DQ graph TensorRT builds INT8 from
        info = run_paddle2onnx(pdmodel, pdiparams, full)
        quantized = any(k in info["ops"] for k in QUANT_OPS)
        if int8 and not quantized:
            raise FastdetError(f"{source.dir} is not a quantized model (no quantize ops): compress it first "
                               "(fastdet compress), or drop --int8")
        result = ExportResult(output_dir, output_dir / "model.onnx", False, None, quantized)
        _cut_or_keep_nms(info, full, final, result, remove_nms)
        if quantized:
            _rewrite_qdq(final, result, ort_u8)
        if validate:
            _validate(source, final, result)
        if quantized:
            _limit_weight_bits(final, result, weight_bits, bits_reason)
        full.unlink(missing_ok=True)
        if flavour.symmetric:
            _tensorrt_form(source, final, result)
        result.target = target
        shutil.copy2(source.deploy.path, tmp / source.deploy.path.name)
        _write_sidecar(tmp / SIDECAR, source, result)
    return result


def _flavour_settings(target: str, ort_u8: bool, weight_bits: int | None) -> tuple[OnnxTarget, bool, int, str]:
    """The row of flavour `target`, and for it: uint8 activations or not, the weight bits and why."""
    if target not in TARGETS:
        raise FastdetError(f"unknown export target '{target}' (choose {' or '.join(TARGETS)})")
    from fastdet_cli.machine import int8_weight_bits

    flavour = ONNX_TARGETS[target]
    bits_reason = "set by the caller"
    if flavour.symmetric:  # TensorRT's: int8 activations at zero point 0, full 8-bit weights (GPU)
        ort_u8, (weight_bits, bits_reason) = False, int8_weight_bits(flavour.gpu)
    elif weight_bits is None:
        weight_bits, bits_reason = int8_weight_bits(flavour.gpu)
    return flavour, ort_u8, weight_bits, bits_reason


def _checked_paddle_files(source: ModelSource) -> tuple[Path, Path]:
    """(model.pdmodel, model.pdiparams) of a Paddle model `source`, checked to be a readable program and weights."""
    if source.format != "paddle":
        made = " (compress --engine onnxruntime wrote it ready to deploy: infer, eval, bench and inspect take " \
               "it as it is)" if made_by_ort(source.sidecar()) else ""
        raise FastdetError(f"{source.path} is already ONNX{made}; export takes a Paddle inference model dir")
    pdmodel, pdiparams = paddle_model_files(source.dir)
    check_paddle_model(pdmodel, pdiparams)
    return pdmodel, pdiparams


def _cut_or_keep_nms(info: dict, full: Path, final: Path, result: ExportResult, remove_nms: bool) -> None:
    """`final`: paddle2onnx's graph `full` cut before its NMS (when asked and the program has one), or as it is."""
    if remove_nms and info.get("nms"):
        if cut_nms(full, final) is None:
            raise FastdetError("the Paddle program has multiclass NMS but the ONNX graph has no "
                               "NonMaxSuppression node to cut")
        nms = dict(info["nms"])
        result.nms_removed, result.nms = True, nms
        result.notes.append(f"multiclass NMS cut out of the graph; host NMS uses {nms}")
    else:
        full.rename(final)
        result.nms = info.get("nms")


def _rewrite_qdq(final: Path, result: ExportResult, ort_u8: bool) -> None:
    """Q/DQ pairs where the Paddle program has them only, then (`ort_u8`) activations as uint8 (export/qdq.py)."""
    from fastdet_cli.export.qdq import activations_to_uint8, restrict_to_compute_inputs

    n = restrict_to_compute_inputs(final, final)
    result.notes.append(f"{n} non-convolution inputs read the float tensor instead of a Q/DQ pair "
                        "(as the Paddle quantized program computes; paddle2onnx's out-scale pairs)")
    if ort_u8:
        n = activations_to_uint8(final, final)
        result.activation_uint8 = n > 0
        result.notes.append(f"{n} activation Q/DQ pairs moved from int8 to uint8 (zero point 128) for "
                            "ONNX Runtime's u8 activation kernels (same function)")


def _validate(source: ModelSource, final: Path, result: ExportResult) -> None:
    """Against the same program: an INT8 export before its weight range changes, an FP32 one before its NMS."""
    if result.quantized:
        result.max_diff, result.int8_tolerances, notes = validate_int8_export(source, final)
        result.notes += notes
    else:
        result.max_diff = validate_export(source, final, result.nms if result.nms_removed else None)


def _limit_weight_bits(final: Path, result: ExportResult, weight_bits: int, bits_reason: str) -> None:
    """A quantized export's weights limited to `weight_bits` (below 8: export/qdq.py reduce_weight_range)."""
    result.weight_bits, result.weight_bits_reason = weight_bits, bits_reason
    if weight_bits < 8:
        from fastdet_cli.export.qdq import reduce_weight_range

        n = reduce_weight_range(final, final, weight_bits)
        result.notes.append(f"{n} weight Q/DQ pairs limited to {weight_bits} bits after validation (weight bits "
                            f"{bits_reason}; --weight-bits 8 keeps the full range)")
    else:
        result.notes.append(f"weights kept at 8 bits (weight bits {bits_reason}; --weight-bits 7 for CPUs "
                            "without VNNI)")


def _tensorrt_form(source: ModelSource, final: Path, result: ExportResult) -> None:
    """A symmetric (TensorRT) flavour: quantized biases as float constants, the graph held to TensorRT's ONNX
    parser rules (export/trt_check.py); a problem is an error."""
    from fastdet_cli.export.qdq import float_biases
    from fastdet_cli.export.trt_check import check_for_tensorrt

    if result.quantized:
        n = float_biases(final, final)
        result.notes.append(f"{n} quantized (int32) convolution biases written as float constants "
                            "(TensorRT takes int8 Q/DQ only)")
    problems = check_for_tensorrt(final)
    if problems:
        raise FastdetError(f"the TensorRT export of {source.dir} would not parse in TensorRT "
                           f"({len(problems)} problem(s)): " + "; ".join(problems[:3]))
    result.notes.append("TensorRT flavour: checked against TensorRT's ONNX parser rules, no problem found")


def _write_sidecar(path: Path, source: ModelSource, result: ExportResult) -> None:
    import yaml

    data = {"source": str(source.dir), "source_sha256": source.content_hash(), "opset": OPSET,
            "nms_removed": result.nms_removed, "quantized": result.quantized,
            "activation_uint8": result.activation_uint8, "weight_bits": result.weight_bits,
            "weight_bits_reason": result.weight_bits_reason,
            "target": result.target,
            "validation_max_abs_diff": {k: float(v) for k, v in result.max_diff.items()}}
    if result.nms_removed:
        data["nms"] = result.nms
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def validate_int8_export(source: ModelSource, onnx_path: Path) -> tuple[dict, dict, list[str]]:
    """export/int8_check.py against the quantized program (structure exactly, outputs before NMS within
    rounding noise): (figures, tolerances, notes); a problem is a FastdetError."""
    from fastdet_cli.export.int8_check import check_int8_export

    check = check_int8_export(source.dir, onnx_path, source.deploy)
    if check.problems:
        more = f" (and {len(check.problems) - 1} more)" if len(check.problems) > 1 else ""
        raise FastdetError(f"INT8 export validation failed: {check.problems[0]}{more}")
    return check.figures, check.tolerances, check.notes


def validate_export(source: ModelSource, onnx_path: Path, host_nms: dict | None) -> dict[str, float]:
    """An FP32 export: the same real input through Paddle Inference and ONNX Runtime; max abs diff per output,
    within FP32_TOL of each output's range — before NMS where the NMS was cut (after it, near-tied scores
    may keep other boxes for differences of 1e-7)."""
    from fastdet_cli.export.int8_check import paired_outputs, raw_outputs
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    if host_nms is not None:
        ref_runs, out_runs = raw_outputs(source.dir, onnx_path, source.deploy, seeds=(0,))
        pairs = paired_outputs(ref_runs[0], out_runs[0])
        if not pairs:
            raise FastdetError(f"export validation failed: ONNX outputs {[o.shape for o in out_runs[0]]}, Paddle's "
                               f"before NMS {[r.shape for r in ref_runs[0]]}")
    else:
        from fastdet_cli.data.synth import sample_inputs

        feed = sample_inputs(source.deploy)
        with create_runner("paddle", source.dir, RunnerOptions(threads=1, mkldnn=False)) as ref:
            ref_out = ref.infer({k: feed[k] for k in ref.input_metadata()})
            ref_names = ref.output_names()
        with create_runner("ort", onnx_path, RunnerOptions(threads=1)) as ort:
            out = ort.infer({k: feed[k] for k in ort.input_metadata()})
        if len(out) != len(ref_out):
            raise FastdetError(f"export validation failed: {len(out)} ONNX outputs vs {len(ref_out)} Paddle outputs")
        pairs = {rn: (o, r) for rn, o, r in zip(ref_names, out, ref_out)}
    diffs: dict[str, float] = {}
    for name, (a, r) in pairs.items():
        if a.shape != r.shape:
            raise FastdetError(f"export validation failed: output {name} has shape {a.shape}, Paddle {r.shape}")
        if a.size == 0:
            diffs[name] = 0.0
            continue
        a64, r64 = a.astype(np.float64), r.astype(np.float64)
        if r.ndim == 2 and r.shape[1] == 6:  # in-graph NMS rows: same set, possibly another order
            a64, r64 = (x[np.lexsort(x[:, ::-1].T)] for x in (a64, r64))
        diffs[name] = float(np.abs(a64 - r64).max())
        span = max(1.0, float(np.ptp(r64)))
        if diffs[name] > FP32_TOL * span:
            raise FastdetError(f"export validation failed: output {name} differs from Paddle Inference by up to "
                               f"{diffs[name]:.3g} (allowed: {FP32_TOL:g} of its range, {FP32_TOL * span:.3g})")
    return diffs


def cut_onnx_nms(source: ModelSource, output_dir: Path) -> dict:
    """An ONNX detector that holds multiclass NMS → the same graph cut before NonMaxSuppression, written to
    `output_dir` (model.onnx, the deploy config unchanged, fastdet.yml with the NMS parameters). The parameters
    come from the graph's NMS node (thresholds, boxes per class) over the deploy config's NMS section; the cut is
    checked against the graph's own NMS on a real input (the `normalized` setting that agrees best is kept).
    Returns the NMS parameters."""
    import yaml

    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.det.config import NmsParams
    from fastdet_cli.det.match import match_detections
    from fastdet_cli.det.postprocess import from_nms_output, multiclass_nms
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    with atomic_dir(output_dir) as tmp:
        found = cut_nms(source.path, tmp / "model.onnx")
        if found is None:
            raise FastdetError(f"{source.path} has no NonMaxSuppression node to cut")
        base = (source.deploy.nms or NmsParams()).as_dict()
        base.update({k: v for k, v in found.items() if k in ("score_threshold", "nms_threshold")})
        if "max_output_boxes_per_class" in found:
            base["nms_top_k"] = int(found["max_output_boxes_per_class"])
        feed = sample_inputs(source.deploy)
        with create_runner("ort", source.path, RunnerOptions(threads=1)) as full, \
                create_runner("ort", tmp / "model.onnx", RunnerOptions(threads=1)) as cut:
            ref_out = full.infer({k: feed[k] for k in full.input_metadata()})
            out = cut.infer({k: feed[k] for k in cut.input_metadata()})
            names = cut.output_names()
        ref = from_nms_output(ref_out[0], ref_out[1] if len(ref_out) > 1 else None)
        boxes, scores = (out[0], out[1]) if names[0] == "boxes" else (out[1], out[0])
        best = None
        for normalized in (base.get("normalized", True), not base.get("normalized", True)):
            params = NmsParams.from_mapping({**base, "normalized": normalized})
            agree = match_detections(multiclass_nms(boxes[0], scores[0], params), ref)
            if best is None or agree["matched"] > best[1]["matched"]:
                best = (params, agree)
        params, agree = best
        if agree["matched"] < 0.95:
            raise FastdetError(f"cutting the NMS out of {source.path} changes its detections (only "
                               f"{agree['matched']:.0%} of the graph's boxes found again): keep it with NMS")
        shutil.copy2(source.deploy.path, tmp / source.deploy.path.name)
        side = {"source": str(source.path), "source_sha256": source.content_hash(), "nms_removed": True,
                "quantized": False, "nms": params.as_dict(),
                "validation_max_abs_diff": {"matched": float(agree["matched"]), "score": float(agree["score"])}}
        (tmp / SIDECAR).write_text(yaml.safe_dump(side, sort_keys=False))
    return params.as_dict()
