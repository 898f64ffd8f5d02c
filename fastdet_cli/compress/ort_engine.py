"""The ONNX Runtime engine of `fastdet compress` (`Global.engine: onnxruntime`): post-training quantization of
the validated FP32 ONNX export (NMS cut) with ONNX Runtime's own quantizer.

Why a second engine: PaddleSlim's program quantizes convolution *inputs* only, and ONNX Runtime fuses a
convolution into its integer kernels (QLinearConv) only when the output is quantized too (DequantizeLinear →
Conv → QuantizeLinear). ORT's `quantize_static` writes exactly that form: per-channel int8 weights, uint8
activations with asymmetric calibrated ranges, the output of every quantized convolution quantized. So ORT
runs this graph in INT8, where it runs PaddleSlim's export in float (docs/performance.md has both).

The steps: the FP32 graph prepared for the form (hard-swishes fused or split, ORT's pre-processing), the
calibration chosen when unset (compress/calibration_choice.py), the quantization (compress/ort_quantize.py: the
settings, calibration and op types), and the form checked (TensorRT's parser rules, ORT's float islands). With
`PTQ.max_map_drop` the sensitivity search (compress/search.py) ranks convolutions on a copy that keeps float weights
behind Q/DQ pairs, and writes the probe with the chosen ones wired to float.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from fastdet_cli.compress.calibration import Statistics
from fastdet_cli.compress.calibration_choice import choose_calibration
from fastdet_cli.compress.config import CompressConfig
from fastdet_cli.compress.ort_quantize import post_conv_nodes, quant_settings, quantize, write_model_dir
from fastdet_cli.compress.samples import FeedSamples
from fastdet_cli.det.model import ModelSource
from fastdet_cli.errors import FastdetError
from fastdet_cli.export.targets import DEFAULT_TARGET, OnnxTarget
from fastdet_cli.runtime.registry import BACKENDS


def run_ort_ptq(cfg: CompressConfig, source: ModelSource, samples: FeedSamples, out_dir: Path, dataset_spec,
                log=print, stats: Statistics | None = None,
                keep_prepared: Path | None = None) -> tuple[dict, dict | None, ModelSource]:
    """Quantize `source`'s FP32 ONNX export into `out_dir` (model.onnx + fastdet.yml). `dataset_spec` is
    (spec, why) for the sensitivity search, or None without `PTQ.max_map_drop`. `stats`: the calibration
    statistics shared by every form of one compress (else this call's own). `keep_prepared`: where to keep the
    FP32 graph that was quantized (hard-swishes, folding and smoothing done: QAT starts from its weights).
    Returns (settings, search report or None, the FP32 ONNX model)."""
    from fastdet_cli.artifacts import nms_free_onnx
    from fastdet_cli.lazy import require

    require("onnxruntime.quantization", "base", "compress --engine onnxruntime")
    settings = quant_settings(cfg)
    stats = stats or Statistics(samples, log)
    # a Paddle model: its export, validated against Paddle Inference, NMS cut; an ONNX model: itself, its NMS cut
    # and checked against the graph's own NMS
    fp32 = nms_free_onnx(source)
    work = out_dir.with_name(out_dir.name + "-ort")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        pre = _prepared_fp32(fp32, settings, work)
        if settings.get("smooth_alpha"):
            pre = _smoothed(pre, settings, stats, work)
        note = {"engine": "onnxruntime", "source_fp32_onnx": str(fp32.path),
                "weight_bits": 7 if settings["reduce_range"] else 8, "target": settings["target"]}
        exclude: list[str] = []
        search = None
        post = post_conv_nodes(pre)
        settings["post_conv_nodes_float"] = len(post)
        # where the form's accuracy is measured: its own runtime, else ONNX Runtime (it runs any Q/DQ graph)
        runtime = cfg.target.backend_spec
        if settings["calibrate_method"] == "auto":
            choose_calibration(fp32, pre, samples, settings, post, work, note, runtime or BACKENDS["ort"], log, stats)
        if dataset_spec is not None:
            search, exclude = _search(cfg, fp32, pre, samples, settings, work, dataset_spec, note, post,
                                      out_dir / "model.onnx", runtime, log, stats)
        else:
            quantize(pre, out_dir / "model.onnx", samples, settings, post, stats=stats)
            _corrected(out_dir / "model.onnx", pre, samples, settings, log)
        write_model_dir(fp32, out_dir / "model.onnx", out_dir, note)
        if keep_prepared is not None:
            shutil.copyfile(pre, keep_prepared)
        if settings.get("smooth_alpha") or settings.get("depthwise_channel_ranges"):
            log(f"{settings['target']} form: {settings.get('depthwise_channel_ranges_written', 0)} depthwise "
                f"convolution input(s) with a range per channel, {settings.get('smoothed_tensors', 0)} convolution "
                f"input(s) smoothed (α {settings.get('smooth_alpha') or 0})")
        _check_form(cfg.target, out_dir / "model.onnx", settings, log)
        settings.update(nodes_to_exclude=exclude, images_used=len(samples), seconds=round(time.perf_counter() - t0, 1),
                        calibration_passes=stats.gathered)  # passes of the images so far (shared by the forms)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return settings, search, fp32


def _prepared_fp32(fp32: ModelSource, settings: dict, work: Path) -> Path:
    """The FP32 graph the quantizer reads, in `work`: hard-swishes as the form wants them, then ONNX shape
    inference and ORT's basic graph optimizations (batch_norm folded into the convolutions)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fastdet_cli.onnx_graph import fuse_hardswish, hard_swish_pieces

    pre = work / "fp32_pre.onnx"
    # for a graph with quantized convolution outputs (ORT, TensorRT), hard-swishes written as Add → Clip → Mul
    # → Div become one HardSwish node first: else each piece gets its own Q/DQ pair (four roundings), and ORT
    # runs the pieces as separate full-size ops (onnx_graph.fuse_hardswish). OpenVINO's form quantizes only the
    # convolution inputs, nothing lands between the pieces, and OpenVINO fuses them itself — while the ONNX
    # HardSwish node it does not (it inlines it as HardSigmoid · x with layout reorders: INT8 took 85 ms
    # instead of 20 on the real-weight PicoDet)
    # — and OpenVINO's form gets every hard-swish as those pieces: a HardSwish node or HardSigmoid · x (how
    # paddle2onnx writes Paddle's hard_swish) ran its INT8 at 106 ms, the pieces at 52 ms (onnx_graph)
    start, fused, split = fp32.path, 0, 0
    graph = onnx.load(str(fp32.path))
    if settings["quantize_conv_outputs"]:
        fused = fuse_hardswish(graph)
    else:
        split = hard_swish_pieces(graph)
    if fused or split:
        start = work / "fp32_hardswish.onnx"
        onnx.save(graph, str(start))
    settings["hard_swish_fused"] = fused
    settings["hard_swish_split"] = split
    # the symbolic pass (sympy) is not needed: paddle2onnx writes the shapes
    quant_pre_process(str(start), str(pre), skip_symbolic_shape=True)
    return pre


def _smoothed(pre: Path, settings: dict, stats: Statistics, work: Path) -> Path:
    """The prepared FP32 graph with its regular convolutions' inputs smoothed (compress/smooth.py), from each
    channel's largest |x| over the calibration images (the statistics' per-channel min and max)."""
    import numpy as np
    import onnx

    from fastdet_cli.compress.smooth import smooth, smoothable
    from fastdet_cli.export.qdq import prune_dead_nodes

    model = onnx.load(str(pre))
    ranges = stats.channel_ranges(pre, settings["op_types_to_quantize"], set(smoothable(model)))
    absmax = {t: np.maximum(np.abs(lo), np.abs(hi)) for t, (lo, hi) in ranges.items()}
    settings["smoothed_tensors"] = smooth(model, absmax, settings["smooth_alpha"])
    prune_dead_nodes(model)
    out = work / "fp32_smooth.onnx"
    onnx.save(model, str(out))
    return out


def _corrected(model_path: Path, pre: Path, samples, settings: dict, log) -> None:
    """`model_path`'s biases corrected against the FP32 graph `pre` on a few calibration images
    (compress/bias_correction.py), where `settings["bias_correction"]` is on."""
    if not settings.get("bias_correction"):
        return
    import onnx

    from fastdet_cli.compress.bias_correction import DEFAULT_IMAGES, correct_biases
    from fastdet_cli.compress.samples import quarter_progress, spread_feeds

    t0 = time.perf_counter()
    feeds = spread_feeds(samples, DEFAULT_IMAGES)
    model = onnx.load(str(model_path))
    log(f"bias correction on {len(feeds)} calibration images (each convolution's mean output per channel made "
        "FP32's, in graph order)")
    record = correct_biases(model, onnx.load(str(pre)), feeds, quarter_progress(log, "bias correction"))
    onnx.save(model, str(model_path))
    settings["bias_correction_record"] = {**record, "seconds": round(time.perf_counter() - t0, 1)}


def _check_form(target: OnnxTarget, model: Path, settings: dict, log) -> None:
    """The INT8 graph held against its runtime: TensorRT's parser rules for TensorRT's form (an error), and for
    ORT's form the float islands ORT leaves in its INT8 chains (settings["ort_optimized_graph"])."""
    if target.symmetric:  # TensorRT's form: held against its parser's rules
        from fastdet_cli.export.trt_check import check_for_tensorrt

        problems = check_for_tensorrt(model)
        if problems:
            raise FastdetError(f"the TensorRT-flavoured INT8 model would not parse in TensorRT ({len(problems)} "
                               "problem(s)): " + "; ".join(problems[:3]))
    if target.name == DEFAULT_TARGET:  # ORT's form: the float islands ORT leaves in its INT8 chains
        from fastdet_cli.runtime.onnxruntime import float_islands

        g = settings["ort_optimized_graph"] = float_islands(model)
        log(f"ONNX Runtime's optimized graph: {g['float_between_int8']} float op(s) between quantized ops "
            + (f"({', '.join(f'{t} {n}' for t, n in g['float_between_int8_types'].items())})"
               if g["float_between_int8"] else "(every INT8 chain stays integer)"))


def _search(cfg, fp32: ModelSource, pre: Path, samples, settings, work: Path, dataset_spec, note, post,
            final: Path, runtime, log, stats: Statistics | None = None):
    """The sensitivity search on a probe quantization (float weights behind Q/DQ), each candidate's runtime
    measured on `runtime` (the BackendSpec the form is made for; None: not measured here); the output written to
    `final` is the probe with the chosen convolutions wired to float — exactly the graph whose mAP the search
    measured (a second quantization with nodes_to_exclude was measured to differ: with more op types quantized it
    fell from 0.581 to 0.296 on the embedded model) — with the weight Q/DQ pairs folded to int8 and the pairs
    left unused removed; then, with bias correction on, its INT8 convolutions' biases corrected, measured again on
    the search's dataset and kept only when not worse (`_corrected_if_better`)."""
    import onnx

    from fastdet_cli.agreement import labelled
    from fastdet_cli.compress.search import search_float_layers
    from fastdet_cli.compress.sensitivity import deployable, ranking_feeds

    spec, why = dataset_spec
    dataset = labelled(spec, fp32, BACKENDS["ort"])  # an image folder: agreement with the FP32 model
    log(f"sensitivity search on {spec} ({why})")
    t0 = time.perf_counter()
    probe_dir = work / "qdq_weights"
    probe_dir.mkdir()
    quantize(pre, probe_dir / "model.onnx", samples, settings, post, qdq_weights=True, stats=stats)
    write_model_dir(fp32, probe_dir / "model.onnx", probe_dir, note)
    feeds = ranking_feeds(samples)
    result = search_float_layers(fp32, probe_dir, work / "variant", dataset, feeds,
                                 float(cfg.ptq["max_map_drop"]) / 100, cfg.ptq.get("max_float_layers"), log, runtime)
    exclude = [s.conv for s in result.chosen]
    onnx.save(deployable(onnx.load(str(probe_dir / "model.onnx")), result.chosen), str(final))
    report = {**result.as_dict(), "kept_float": exclude, "reason": why,
              "runtime_measured_on": f"{runtime.name}, 1 thread" if runtime else None,
              "max_map_drop_points": cfg.ptq["max_map_drop"], "seconds": round(time.perf_counter() - t0, 1)}
    if settings.get("bias_correction"):
        _corrected_if_better(final, pre, samples, settings, probe_dir, dataset, runtime or BACKENDS["ort"], report,
                             log)
    if exclude:
        log(f"kept in float: {', '.join(exclude)}")
    return report, exclude


def _corrected_if_better(final: Path, pre: Path, samples, settings: dict, probe_dir: Path, dataset, judge, report,
                         log) -> None:
    """Bias correction of the search's chosen model (its INT8 convolutions only), measured on the search's dataset
    on `judge` and kept when its mAP is not below the one the search measured: the written model is always one
    that was measured. Measured 2026-12-06: better on the real-weight PicoDet's OpenVINO form (held-out agreement
    0.962 → 0.970), worse on a test model's ORT form (0.961 → 0.949) — where layers are float, the convolutions
    around them were quantized for a different neighbourhood."""
    import shutil as sh

    from fastdet_cli.compress.variants import evaluate_map

    check = probe_dir.with_name("corrected")
    sh.copytree(probe_dir, check)
    sh.copyfile(final, check / "model.onnx")
    _corrected(check / "model.onnx", pre, samples, settings, log)
    before, after = report["chosen_map"], round(evaluate_map(check, dataset, judge), 4)
    kept = after >= before
    if kept:
        sh.copyfile(check / "model.onnx", final)
        drop = round(100 * (report["fp32_map"] - after), 2)
        met = bool(report.get("met")) or drop <= report["max_drop_points"]
        report.update(chosen_map=after, chosen_drop_points=drop, met=met, target_reached=met)
    report["bias_correction"] = {"map_before": before, "map_after": after, "kept": kept}
    log(f"bias correction on the chosen model: mAP {before:.4f} → {after:.4f} on the search's images, "
        + ("kept" if kept else "not kept (worse)"))
