"""ONNX Runtime's `quantize_static` with fastdet's settings, for the ONNX Runtime engine (compress/ort_engine.py).

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
"""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np

from fastdet_cli.compress.calibration import Statistics
from fastdet_cli.compress.config import DEPLOY_TARGETS, CompressConfig, ort_method
from fastdet_cli.compress.samples import FeedSamples
from fastdet_cli.compress.smooth import DEFAULT_ALPHA
from fastdet_cli.det.model import SIDECAR, ModelSource


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
    target = cfg.target
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
    settings.update(_form_setting("depthwise_channel_ranges", ptq.get("depthwise_channel_ranges"), True, target))
    settings.update(_form_setting("smooth_alpha", ptq.get("smooth_alpha"), DEFAULT_ALPHA, target))
    settings["bias_correction"] = bool(ptq.get("bias_correction", True))  # compress/bias_correction.py
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
    if settings.get("depthwise_channel_ranges"):
        _channel_ranges(fp32_onnx, out_onnx, samples, settings, stats, part)
    if settings.get("quantize_conv_outputs", True) and settings["activation_type"] == "QUInt8":
        # ONNX Runtime's form: hard-sigmoids (hard-swish's gate) written with ops ORT runs in integer kernels
        from fastdet_cli.export.qdq import integer_hard_sigmoid, prune_dead_nodes

        model = onnx.load(str(out_onnx))
        settings["hard_sigmoid_integer"] = integer_hard_sigmoid(model)
        if settings["hard_sigmoid_integer"]:
            prune_dead_nodes(model)
            onnx.save(model, str(out_onnx))


def _form_setting(key: str, asked, default, target) -> dict:
    """A setting only OpenVINO's form runs in INT8 (`depthwise_channel_ranges`: compress/depthwise.py;
    `smooth_alpha`: compress/smooth.py): `default` there, off in the other forms — also where the config asks for
    it, with the reason (one config makes several forms)."""
    fits = not target.conv_outputs and not target.symmetric
    off = False if isinstance(default, bool) else None
    if asked is None:
        return {key: default if fits else off, f"{key}_reason": "on (OpenVINO's form)" if fits else
                "off (this form's runtime takes one activation scale per tensor)"}
    if asked and not fits:
        return {key: off, f"{key}_reason": "off: asked for, but this form's runtime takes one activation scale "
                                           "per tensor (it would run in float there)"}
    return {key: asked or off, f"{key}_reason": "set in the config"}


def _channel_ranges(fp32_onnx: Path, out_onnx: Path, samples: FeedSamples, settings: dict,
                    stats: Statistics | None, part: int | None) -> None:
    """The quantized graph's depthwise convolutions given per-channel input ranges (compress/depthwise.py),
    from the calibration statistics (min and max per channel, of all the images or of half `part`)."""
    import onnx

    from fastdet_cli.compress.depthwise import depthwise_inputs, per_channel_depthwise

    model = onnx.load(str(out_onnx))
    wanted = set(depthwise_inputs(model).values())
    if not wanted:
        settings["depthwise_channel_ranges_written"] = 0
        return
    stats = stats or Statistics(samples, lambda *_: None)
    ranges = stats.channel_ranges(fp32_onnx, settings["op_types_to_quantize"], wanted, part)
    settings["depthwise_channel_ranges_written"] = per_channel_depthwise(model, ranges)
    onnx.save(model, str(out_onnx))


def _takes_ranges() -> bool:
    """Whether this ONNX Runtime's quantize_static reads precomputed ranges (a calibration cache; 1.32 does)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def write_model_dir(fp32: ModelSource, onnx_path: Path, target: Path, engine_note: dict) -> Path:
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
