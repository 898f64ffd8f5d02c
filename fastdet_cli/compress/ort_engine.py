"""The ONNX Runtime engine of `fastdet compress` (`Global.engine: onnxruntime`): post-training quantization of
the validated FP32 ONNX export (NMS cut) with ONNX Runtime's own quantizer.

Why a second engine: PaddleSlim's program quantizes convolution *inputs* only, and ONNX Runtime fuses a
convolution into its integer kernels (QLinearConv) only when the output is quantized too (DequantizeLinear →
Conv → QuantizeLinear). ORT's `quantize_static` writes exactly that form: per-channel int8 weights, uint8
activations with asymmetric calibrated ranges, the output of every quantized convolution quantized. So ORT
runs this graph in INT8, where it runs PaddleSlim's export in float (docs/performance.md has both).

- Calibration images go through the model's own deploy-config preprocessing (`FeedSamples`, as for PaddleSlim).
- Calibration methods: ORT's MinMax / Entropy / Percentile / Distribution; PaddleSlim's names with an ORT
  counterpart are accepted (abs_max → MinMax, hist → Percentile at `hist_percent`, KL → Entropy).
- `reduce_range` (7-bit weights) is on by default where the CPU has no VNNI: u8 × s8 products summed in pairs
  saturate int16 there (the same trap as export/qdq.py's `reduce_weight_range`). It is recorded in the report.
- Quantized op types: Conv and the element-wise/concat/pool ops ORT has integer kernels for, but only where
  they feed a convolution: everything after the last convolutions (the DFL head's Softmax/MatMul, the score
  Sigmoid, box decoding) stays float — quantizing those cost 3 mAP points on the embedded model, and they are
  the model's outputs, not a path to the next INT8 kernel (`post_conv_nodes`).
- Hard-swish's gate stays integer in ONNX Runtime's form: each DQ → HardSigmoid → Q (a float island: ORT has no
  integer HardSigmoid) is rewritten as DQ + DQ(3) → Clip → Q read back at scale 1/255 (export/qdq.py
  `integer_hard_sigmoid`), which ORT fuses into QLinearAdd (embedded model, Zen 4, 1 thread: INT8 0.84× → 1.08×
  FP32, mAP 0.5899 → 0.5897).
- With `PTQ.max_map_drop` the sensitivity search of compress/sensitivity.py ranks convolutions on a copy that
  keeps float weights behind Q/DQ pairs, and the chosen ones go to `nodes_to_exclude` in the final quantization.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import time
from pathlib import Path

import numpy as np

from fastdet_cli.compress.calibration import Statistics
from fastdet_cli.compress.common import FeedSamples
from fastdet_cli.compress.config import DEPLOY_TARGETS, CompressConfig, ort_method
from fastdet_cli.export.targets import DEFAULT_TARGET
from fastdet_cli.det.model import SIDECAR, ModelSource
from fastdet_cli.errors import FastdetError

# ops ORT has integer kernels for, besides Conv: quantizing them removes float islands between convolutions
# (PP-YOLOE-l on AVX2: Conv alone 1.45×, with these 1.94× FP32 on ORT; docs/performance.md)
DEFAULT_OP_TYPES = ("Conv", "Add", "Mul", "Concat", "Sigmoid", "MaxPool", "Resize", "GlobalAveragePool")
PADDLE_OP_TYPES = {"conv2d": "Conv", "depthwise_conv2d": "Conv", "matmul": "MatMul", "matmul_v2": "MatMul",
                   "mul": "MatMul", "conv2d_transpose": "ConvTranspose"}


def ort_op_types(names: list[str] | None) -> list[str]:
    out = []
    for n in names or DEFAULT_OP_TYPES:
        out.append(PADDLE_OP_TYPES.get(n, n))
    return sorted(set(out))


def post_conv_nodes(model_path: Path) -> list[str]:
    """Names of the non-Conv nodes from which no Conv can be reached: the head's post-processing."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    leads: dict[str, bool] = {}

    def reaches_conv(node) -> bool:  # iterative DFS with memo (graphs are deep)
        stack = [(node, False)]
        while stack:
            cur, done = stack.pop()
            if cur.name in leads:
                continue
            nxt = [c for o in cur.output for c in consumers.get(o, [])]
            if done:
                leads[cur.name] = any(c.op_type == "Conv" or leads.get(c.name, False) for c in nxt)
                continue
            stack.append((cur, True))
            stack.extend((c, False) for c in nxt if c.name not in leads)
        return leads[node.name]

    return [n.name for n in graph.node if n.op_type != "Conv" and n.name and not reaches_conv(n)]


class FeedReader:
    """ORT's CalibrationDataReader over calibration images: `get_next()` → {input: batch of 1} or None."""

    def __init__(self, samples: FeedSamples, input_names: list[str]):
        self.samples, self.input_names, self.i = samples, input_names, 0

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        feed = self.samples[self.i]
        self.i += 1
        return {k: np.ascontiguousarray(feed[k][None]) for k in self.input_names}

    def rewind(self) -> None:
        self.i = 0


def quant_settings(cfg: CompressConfig) -> dict:
    """The quantizer's settings from the config's PTQ section (validated; defaults filled in)."""
    ptq = cfg.ptq
    method = ort_method(ptq.get("calibration_method"))
    from fastdet_cli.machine import int8_weight_bits

    reduce_range = ptq.get("reduce_range")
    target = DEPLOY_TARGETS[cfg.deploy_backend]
    bits, why = int8_weight_bits(target.gpu)
    settings = {
        "engine": "onnxruntime", "calibrate_method": method, "quant_format": "QDQ",
        # OpenVINO: convolution inputs only (its own INT8 form); ORT needs the outputs quantized too to fuse
        "op_types_to_quantize": ort_op_types(ptq.get("quantize_op_types")
                                             or (None if target.conv_outputs else ["Conv"])),
        "quantize_conv_outputs": target.conv_outputs, "runtime_backend": target.backend,
        "per_channel": bool(ptq.get("per_channel", True)),
        "reduce_range": (bits == 7) if reduce_range is None else bool(reduce_range),
        "reduce_range_reason": "set in the config" if reduce_range is not None else f"{'on' if bits == 7 else 'off'}"
                               f" (weight bits {why})",
        "activation_type": "QInt8" if target.symmetric else "QUInt8", "weight_type": "QInt8",
        "target": cfg.deploy_backend,
    }
    if method == "Percentile":
        settings["percentile"] = float(ptq.get("hist_percent", 0.9999)) * 100
    settings["calibration_method_asked"] = ptq.get("calibration_method") or "auto (unset)"
    return settings


def quantize(fp32_onnx: Path, out_onnx: Path, samples: FeedSamples, settings: dict, exclude: list[str],
             qdq_weights: bool = False, stats: Statistics | None = None, part: int | None = None) -> None:
    """One `quantize_static` run of `fp32_onnx` (already pre-processed) into `out_onnx`. `qdq_weights` writes the
    form the sensitivity search rewires: float weights behind Q/DQ pairs, and Relu/Clip kept (ORT drops them
    when a uint8 output makes them redundant, but a convolution wired back to float needs them). With `stats`
    (MinMax or Percentile), the ranges come from the statistics gathered once (on half `part` of the images, or
    all of them) and `samples` is not run again."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class _Reader(FeedReader, CalibrationDataReader):
        pass

    inputs = [i.name for i in onnx.load(str(fp32_onnx), load_external_data=False).graph.input]
    # asymmetric activation ranges for every method (ORT's Percentile calibrator is symmetric by default, which
    # wastes half of uint8's levels on mostly-positive activations)
    trt = DEPLOY_TARGETS[settings["target"]].symmetric  # TensorRT: int8 activations at zero point 0, float biases
    extra = {"AddQDQPairToWeight": qdq_weights, "QDQKeepRemovableActivations": qdq_weights,
             "CalibTensorRangeSymmetric": trt, "ActivationSymmetric": trt, "WeightSymmetric": True,
             "QuantizeBias": not trt}
    if not settings.get("quantize_conv_outputs", True):
        extra["OpTypesToExcludeOutputQuantization"] = ["Conv"]
    if "percentile" in settings:
        extra["CalibPercentile"] = settings["percentile"]
    cached = {}
    if stats is not None and stats.supports(settings["calibrate_method"]) and _takes_ranges():
        from onnxruntime.quantization.calibrate import save_tensors_data

        ranges = stats.ranges(fp32_onnx, settings["op_types_to_quantize"], trt, settings["calibrate_method"],
                              settings.get("percentile"), part)
        cached["calibration_cache_path"] = out_onnx.with_name(out_onnx.name + ".ranges.json")
        save_tensors_data(ranges, cached["calibration_cache_path"])
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress with print()
            quantize_static(str(fp32_onnx), str(out_onnx), None if cached else _Reader(samples, inputs),
                            quant_format=QuantFormat.QDQ, **cached,
                            op_types_to_quantize=settings["op_types_to_quantize"],
                            per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                            activation_type=getattr(QuantType, settings["activation_type"]),
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude) or None,
                            calibrate_method=getattr(CalibrationMethod, settings["calibrate_method"]),
                            extra_options=extra)
    finally:  # the ranges handed to ORT never stay beside the model, whatever happened
        if cached:
            cached["calibration_cache_path"].unlink(missing_ok=True)
    if settings.get("quantize_conv_outputs", True) and settings["activation_type"] == "QUInt8":
        # ONNX Runtime's form: hard-sigmoids (hard-swish's gate) written with ops ORT runs in integer kernels
        from fastdet_cli.export.qdq import integer_hard_sigmoid, prune_dead_nodes

        model = onnx.load(str(out_onnx))
        settings["hard_sigmoid_integer"] = integer_hard_sigmoid(model)
        if settings["hard_sigmoid_integer"]:
            prune_dead_nodes(model)
            onnx.save(model, str(out_onnx))


def _takes_ranges() -> bool:
    """Whether this ONNX Runtime's quantize_static reads precomputed ranges (a calibration cache; 1.32 does)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


# what `calibration_method: auto` tries, in order of preference on a tie. Entropy is left out: under fastdet's
# settings ORT's Entropy calibrator writes a model byte-identical to MinMax's (real-weight PicoDet, 2026-12-06);
# Distribution too: 2% of the FP32 boxes kept there, where Percentile 99.99 kept 78% (docs/performance.md)
CALIBRATIONS = (("Percentile", 99.99), ("Percentile", 99.999), ("Percentile", 99.9), ("MinMax", None))


def choose_calibration(fp32: ModelSource, pre: Path, samples: FeedSamples, settings: dict, post: list[str],
                       work: Path, note: dict, log=print, stats: Statistics | None = None) -> dict:
    """`PTQ.calibration_method: auto`: the calibration images are split in two halves; every calibration of
    CALIBRATIONS quantizes with one half and is scored on the other — agreement mAP with the FP32 model's
    detections there, on the runtime the form is made for — both ways round (a range that one outlier image widens,
    MinMax's, shows when that image is among the calibrating half: measured once, MinMax won on one split of the
    real-weight pages and kept 0.21 agreement on all of them). The best mean (the first on a tie) goes into
    `settings` for the real quantization on all the images. Only calibration images are read: never the eval or the
    search's dataset. Returns the record (also `settings["calibration_strategy"]`)."""
    import copy
    import os

    from fastdet_cli.agreement import labelled
    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.runtime.base import RunnerOptions

    files = list(samples.files)
    if len(files) < 4:
        raise FastdetError(f"PTQ.calibration_method auto splits the calibration images in two (each half calibrates, "
                           f"the other measures): {len(files)} image(s) are too few; give at least 4, or name a method")
    stats = stats or Statistics(samples, log)
    halves = tuple([files[i] for i in part] for part in stats.parts)  # the halves the statistics were split into
    backend = settings["runtime_backend"] or "ort"
    folds = []
    for k, (calib, measured) in enumerate((halves, halves[::-1])):
        subset = copy.copy(samples)
        subset.files = calib
        folder = work / f"strategy_measure_{k}"
        folder.mkdir()
        for i, f in enumerate(measured):
            (folder / f"{i:04d}_{Path(f).name}").symlink_to(Path(f).resolve())
        folds.append((subset, labelled(str(folder), fp32, backend)))
    log(f"calibration strategy: {len(CALIBRATIONS)} calibrations, each on one half of the {len(files)} calibration "
        f"images and measured on the other, both ways (agreement mAP with FP32 on {backend})")
    tried = []
    for i, (method, percentile) in enumerate(CALIBRATIONS):
        trial = {k: v for k, v in settings.items() if k != "percentile"}
        trial["calibrate_method"] = method
        if percentile is not None:
            trial["percentile"] = percentile
        t0, scores = time.perf_counter(), []
        for k, (subset, dataset) in enumerate(folds):
            d = work / f"strategy_{i}_{k}"
            d.mkdir()
            quantize(pre, d / "model.onnx", subset, trial, post, stats=stats, part=k)
            _model_dir(fp32, d / "model.onnx", d, note)
            with detector(d, backend, RunnerOptions(threads=os.cpu_count() or 1)) as det:
                scores.append(round(coco_evaluate(det, dataset).map, 4))
            shutil.rmtree(d, ignore_errors=True)
        name = f"{method} {percentile:g}" if percentile is not None else method
        tried.append({"calibration": name, "method": method, "percentile": percentile, "agreement_map_folds": scores,
                      "agreement_map": round(sum(scores) / len(scores), 4),
                      "seconds": round(time.perf_counter() - t0, 1)})
        log(f"  {name}: agreement mAP {' / '.join(f'{x:.4f}' for x in scores)} (mean {tried[-1]['agreement_map']:.4f})")
    best = max(tried, key=lambda t: t["agreement_map"])  # max keeps the first of equals: the preferred order
    settings["calibrate_method"] = best["method"]
    settings.pop("percentile", None)
    if best["percentile"] is not None:
        settings["percentile"] = best["percentile"]
    record = {"halves": [len(h) for h in halves], "measure_files": [[str(f) for f in h] for h in halves[::-1]],
              "backend": backend, "metric": "agreement mAP@[.5:.95] with the FP32 model's detections, mean of the "
              "two folds", "tried": tried, "chosen": best["calibration"]}
    settings["calibration_strategy"] = record
    log(f"calibration chosen: {best['calibration']} (mean agreement mAP {best['agreement_map']:.4f})")
    return record


def _model_dir(fp32: ModelSource, onnx_path: Path, target: Path, engine_note: dict) -> Path:
    """`target` as a fastdet ONNX model dir: model.onnx, the deploy config unchanged and a fastdet.yml that
    keeps the FP32 export's NMS parameters and says the model is quantized."""
    import yaml

    target.mkdir(parents=True, exist_ok=True)
    if onnx_path != target / "model.onnx":
        shutil.copyfile(onnx_path, target / "model.onnx")
    shutil.copyfile(fp32.deploy.path, target / fp32.deploy.path.name)
    side = {k: v for k, v in fp32.sidecar().items() if k not in ("validation_max_abs_diff", "weight_bits")}
    side.update(engine_note, quantized=True, activation_uint8=not DEPLOY_TARGETS[engine_note["target"]].symmetric)
    (target / SIDECAR).write_text(yaml.safe_dump(side, sort_keys=False))
    return target


def run_ort_ptq(cfg: CompressConfig, source: ModelSource, samples: FeedSamples, out_dir: Path, dataset_spec,
                log=print, stats: Statistics | None = None) -> tuple[dict, dict | None, ModelSource]:
    """Quantize `source`'s FP32 ONNX export into `out_dir` (model.onnx + fastdet.yml). `dataset_spec` is
    (spec, why) for the sensitivity search, or None without `PTQ.max_map_drop`. `stats`: the calibration
    statistics shared by every form of one compress (else this call's own). Returns (settings, search report or
    None, the FP32 ONNX model)."""
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
        from onnxruntime.quantization.shape_inference import quant_pre_process

        import onnx

        from fastdet_cli.onnx_graph import fuse_hardswish, hard_swish_pieces

        pre = work / "fp32_pre.onnx"
        t0 = time.perf_counter()
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
        # ONNX shape inference + ORT's basic graph optimizations (batch_norm folded into the convolutions); the
        # symbolic pass (sympy) is not needed: paddle2onnx writes the shapes
        quant_pre_process(str(start), str(pre), skip_symbolic_shape=True)
        note = {"engine": "onnxruntime", "source_fp32_onnx": str(fp32.path),
                "weight_bits": 7 if settings["reduce_range"] else 8, "target": settings["target"]}
        exclude: list[str] = []
        search = None
        post = post_conv_nodes(pre)
        settings["post_conv_nodes_float"] = len(post)
        if settings["calibrate_method"] == "auto":
            choose_calibration(fp32, pre, samples, settings, post, work, note, log, stats)
        if dataset_spec is not None:
            search, exclude = _search(cfg, fp32, pre, samples, settings, work, dataset_spec, note, post,
                                      out_dir / "model.onnx", log, stats)
        else:
            quantize(pre, out_dir / "model.onnx", samples, settings, post, stats=stats)
        _model_dir(fp32, out_dir / "model.onnx", out_dir, note)
        target = DEPLOY_TARGETS[settings["target"]]
        if target.symmetric:  # TensorRT's form: held against its parser's rules
            from fastdet_cli.export.trt_check import check_for_tensorrt

            problems = check_for_tensorrt(out_dir / "model.onnx")
            if problems:
                raise FastdetError(f"the TensorRT-flavoured INT8 model would not parse in TensorRT ({len(problems)} "
                                   "problem(s)): " + "; ".join(problems[:3]))
        if target.name == DEFAULT_TARGET:  # ORT's form: the float islands ORT leaves in its INT8 chains
            from fastdet_cli.runtime.onnxruntime import float_islands

            g = settings["ort_optimized_graph"] = float_islands(out_dir / "model.onnx")
            log(f"ONNX Runtime's optimized graph: {g['float_between_int8']} float op(s) between quantized ops "
                + (f"({', '.join(f'{t} {n}' for t, n in g['float_between_int8_types'].items())})"
                   if g["float_between_int8"] else "(every INT8 chain stays integer)"))
        settings.update(nodes_to_exclude=exclude, images_used=len(samples), seconds=round(time.perf_counter() - t0, 1),
                        calibration_passes=stats.gathered)  # passes of the images so far (shared by the forms)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return settings, search, fp32


def _search(cfg, fp32: ModelSource, pre: Path, samples, settings, work: Path, dataset_spec, note, post,
            final: Path, log, stats: Statistics | None = None):
    """The sensitivity search on a probe quantization (float weights behind Q/DQ); the output written to
    `final` is the probe with the chosen convolutions wired to float — exactly the graph whose mAP the search
    measured (a second quantization with nodes_to_exclude was measured to differ: with more op types quantized it
    fell from 0.581 to 0.296 on the embedded model) — with the weight Q/DQ pairs folded to int8 and the pairs
    left unused removed."""
    import onnx

    from fastdet_cli.compress.sensitivity import deployable, ranking_feeds, search_float_layers
    from fastdet_cli.agreement import labelled

    spec, why = dataset_spec
    dataset = labelled(spec, fp32, "ort")  # an image folder: agreement with the FP32 model
    log(f"sensitivity search on {spec} ({why})")
    t0 = time.perf_counter()
    probe_dir = work / "qdq_weights"
    probe_dir.mkdir()
    quantize(pre, probe_dir / "model.onnx", samples, settings, post, qdq_weights=True, stats=stats)
    _model_dir(fp32, probe_dir / "model.onnx", probe_dir, note)
    feeds = ranking_feeds(samples)
    where = settings["runtime_backend"]  # the runtime of each candidate, where the output will run (TensorRT: not here)
    result = search_float_layers(fp32, probe_dir, work / "variant", dataset, feeds,
                                 float(cfg.ptq["max_map_drop"]) / 100, cfg.ptq.get("max_float_layers"), log, where)
    exclude = [s.conv for s in result.chosen]
    onnx.save(deployable(onnx.load(str(probe_dir / "model.onnx")), result.chosen), str(final))
    report = {**result.as_dict(), "kept_float": exclude, "reason": why,
              "runtime_measured_on": f"{where}, 1 thread" if where else None,
              "max_map_drop_points": cfg.ptq["max_map_drop"], "seconds": round(time.perf_counter() - t0, 1)}
    if exclude:
        log(f"kept in float: {', '.join(exclude)}")
    return report, exclude
