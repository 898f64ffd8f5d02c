"""The auto-compression YAML: FastDeploy's format (newer `QuantAware:` and older `Quantization:` forms),
validated strictly — an unknown key or a wrong type is an error naming the key and the file — with paths
resolved relative to the config file. `default` names the embedded model and its generated dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from fastdet_cli.errors import FastdetError
from fastdet_cli.export.targets import DEFAULT_TARGET, ONNX_TARGETS, OnnxTarget

NUM = (int, float)
# section -> key -> accepted types. Keys fastdet adds to FastDeploy's format are marked (+).
SCHEMA: dict[str, dict[str, tuple]] = {
    "Global": {
        "model_dir": (str,), "format": (str,), "model_filename": (str,), "params_filename": (str,),
        "qat_image_path": (str,), "ptq_image_path": (str,), "image_path": (str,),
        "qat_preprocess": (str,), "ptq_preprocess": (str,), "preprocess": (str,), "arch": (str,),
        "input_list": (list, dict), "qat_batch_size": (int,),
        "eval_dataset": (str,),  # (+) COCO dir or 'default': FP32 and INT8 mAP
        "image_limit": (int,),  # (+) use at most this many calibration/training images
        "deploy_backend": (str, list),  # (+) ONNX flavour(s) of export/targets.py the INT8 graph is made for, or
                                        #     'all' (default: every installed CPU backend's, engine onnxruntime)
        "engine": (str,),  # (+) paddleslim | onnxruntime (the quantizer; see docs/compress.md)
        "qat_augment": (bool,),  # (+) QAT: flip/zoom the training images at random (default true)
        "qat_hold_scales": (bool,),  # (+) QAT: activation ranges calibrated on FP32 and held (default true; engine
                                     #     onnxruntime: false, its scales are trained from the calibrated ones)
        "qat_learn_rounding": (bool,),  # (+) QAT, engine onnxruntime: epoch 1 learns the weights' roundings
                                        #     convolution by convolution (AdaRound; default true)
        "qat_patience": (int,),  # (+) QAT: stop after this many evaluations without a better agreement on the
                                 #     held-back calibration images (default 3; engine onnxruntime: 2 epochs
                                 #     without a better agreement or held-back loss; 0: never stop early)
    },
    "Distillation": {"alpha": NUM, "loss": (str,), "node": (list,)},
    "QuantAware": {"onnx_format": (bool,), "use_pact": (bool,), "activation_quantize_type": (str,),
                   "weight_quantize_type": (str,), "quantize_op_types": (list,), "not_quant_pattern": (list,),
                   "weight_bits": (int,), "activation_bits": (int,),
                   "skip_tensor_list": (list,)},  # (+) weights whose convs stay float (as PTQ's key)
    "PTQ": {"calibration_method": (str,), "skip_tensor_list": (list,), "batch_size": (int,), "batch_nums": (int,),
            "hist_percent": NUM, "quantize_op_types": (list,), "is_full_quantize": (bool,),
            "optimize_model": (bool,),
            "max_map_drop": NUM,  # (+) mAP points; above it, the most sensitive convs are kept in float
            "max_float_layers": (int,),  # (+) at most this many (default: no cap; the search stops at the budget)
            "search_dataset": (str,),  # (+) COCO dir the search measures mAP on (default: see docs)
            "per_channel": (bool,),  # (+) engine onnxruntime: per-channel weight scales (default true)
            "depthwise_channel_ranges": (bool,),  # (+) engine onnxruntime: per-channel depthwise input ranges
            "smooth_alpha": NUM,  # (+) engine onnxruntime: input-channel smoothing of regular convs (0: off)
            "bias_correction": (bool,),  # (+) engine onnxruntime: biases corrected for the rounding (default true)
            "reduce_range": (bool,)},  # (+) engine onnxruntime: 7-bit weights (default: on without VNNI)
    "TrainConfig": {"train_iter": (int,), "learning_rate": NUM + (dict,), "optimizer_builder": (dict,),
                    "eval_iter": (int,), "target_metric": NUM, "logging_iter": (int,), "epochs": (int,)},
}
SCHEMA["Quantization"] = SCHEMA["QuantAware"]  # the older form's name for the same section
CALIBRATION_METHODS = ("avg", "abs_max", "hist", "KL", "mse", "emd")


class QuantEngine(StrEnum):
    """The quantizer (Global.engine, --engine). A str: written to reports and messages as its name."""

    PADDLESLIM = "paddleslim"  # PaddleSlim on the Paddle program (quant_post_static; ACT for QAT)
    ONNXRUNTIME = "onnxruntime"  # ONNX Runtime's quantize_static on the FP32 ONNX export

    @property
    def ort(self) -> bool:
        """ONNX Runtime's quantizer: an ONNX graph per deploy target, made on the FP32 ONNX export."""
        return self is QuantEngine.ONNXRUNTIME

    @property
    def paddleslim(self) -> bool:
        """PaddleSlim: one Paddle program that every backend runs (an ONNX model is converted first)."""
        return self is QuantEngine.PADDLESLIM


ENGINES = tuple(QuantEngine)


# what the onnxruntime engine's graph is made for (Global.deploy_backend): the ONNX flavours' one table
DEPLOY_TARGETS = ONNX_TARGETS
DEPLOY_BACKENDS = tuple(DEPLOY_TARGETS)
FORMATS = ("paddle", "onnx")

# engine onnxruntime: ORT's CalibrationMethod names, and PaddleSlim's names mapped onto them
ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile", "distribution": "Distribution"}
FROM_PADDLE_NAMES = {"abs_max": "minmax", "hist": "percentile", "kl": "entropy"}
DEFAULT_METHOD = "auto"  # engine onnxruntime: the calibration is chosen on a split of the calibration images


def ort_method(name: str | None) -> str:
    """An ORT CalibrationMethod name from a config value (ORT's or PaddleSlim's name), or "auto" (unset: the engine
    tries them, calibration_choice.choose_calibration); FastdetError otherwise."""
    key = (name or DEFAULT_METHOD).lower()
    key = FROM_PADDLE_NAMES.get(key, key)
    if key == "auto":
        return "auto"
    if key not in ORT_METHODS:
        raise FastdetError(f"PTQ.calibration_method '{name}' has no ONNX Runtime counterpart (engine onnxruntime "
                           f"takes auto, {', '.join(ORT_METHODS)}; or abs_max, hist, KL)")
    return ORT_METHODS[key]


@dataclass
class CompressConfig:
    path: Path
    raw: dict[str, dict[str, Any]]
    model_dir: str  # a folder, or 'default'
    calib_images: str  # a folder, a COCO dir, or 'default'
    eval_dataset: str | None
    method_hint: str | None  # 'qat' if QuantAware/Distillation present, 'ptq' if only PTQ
    ptq: dict[str, Any] = field(default_factory=dict)
    quant: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    image_limit: int | None = None
    deploy_backend: str = "onnxruntime"  # the form being made (the first of deploy_backends)
    deploy_backends: tuple[str, ...] = ("onnxruntime",)  # every form one compress makes (engine onnxruntime)
    engine: QuantEngine = QuantEngine.PADDLESLIM
    format: str = "paddle"  # Global.format: the model's format (paddle or onnx)
    model_filename: str | None = None  # Global.model_filename: the model file inside model_dir

    @property
    def target(self) -> OnnxTarget:
        """The ONNX flavour of the form being made (`deploy_backend`, checked when the config was read)."""
        return DEPLOY_TARGETS[self.deploy_backend]

    @property
    def targets(self) -> tuple[OnnxTarget, ...]:
        """Every form's ONNX flavour (`deploy_backends`)."""
        return tuple(DEPLOY_TARGETS[name] for name in self.deploy_backends)


def _resolve(value: str, base: Path) -> str:
    if value == "default" or value.startswith("default:"):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def check_engine(engine: str, where: str) -> QuantEngine:
    if engine not in ENGINES:
        raise FastdetError(f"{where}: unknown engine '{engine}' (choose {' or '.join(ENGINES)})")
    return QuantEngine(engine)


def load_compress_config(path: Path, engine: str | None = None) -> CompressConfig:
    """Read and validate `path`; `engine` (the --engine option) overrides Global.engine."""
    raw = _read_yaml(path)
    _check_schema(path, raw)
    g = raw.get("Global", {})
    if "model_dir" not in g:
        raise FastdetError(f"{path}: 'Global.model_dir' is required (a Paddle model folder, or 'default')")
    fmt = str(g.get("format", "paddle")).lower()
    if fmt not in FORMATS:
        raise FastdetError(f"{path}: Global.format '{g['format']}' is not one of {', '.join(FORMATS)}")
    # no conversion by default: ORT quantizes an ONNX model as it is
    default_engine = QuantEngine.ONNXRUNTIME if fmt == "onnx" else QuantEngine.PADDLESLIM
    engine = check_engine(engine, "--engine") if engine else check_engine(g.get("engine", default_engine),
                                                                         f"{path}: Global.engine")
    ptq = _checked_ptq(path, dict(raw.get("PTQ", {})), engine, fmt, engine_given="engine" in g)
    if engine.ort:
        _check_ort_qat(path, raw)
    elif "qat_learn_rounding" in g:
        raise FastdetError(f"{path}: Global.qat_learn_rounding applies to engine onnxruntime only (its QAT trains "
                           "the INT8 graph's integers): remove it")
    targets = deploy_targets(g.get("deploy_backend"), engine, f"{path}: Global.deploy_backend")
    base = path.resolve().parent
    images = g.get("ptq_image_path") or g.get("qat_image_path") or g.get("image_path") or "default"
    quant = dict(raw.get("QuantAware") or raw.get("Quantization") or {})
    qat_sections = ("QuantAware", "Quantization", "Distillation", "TrainConfig")
    hint = "qat" if any(s in raw for s in qat_sections) else ("ptq" if "PTQ" in raw else None)
    return CompressConfig(
        path=path, raw=raw, model_dir=_resolve(g["model_dir"], base), calib_images=_resolve(images, base),
        eval_dataset=_resolve(g["eval_dataset"], base) if g.get("eval_dataset") else None, method_hint=hint,
        ptq=ptq, quant=quant, distill=dict(raw.get("Distillation", {})), train=dict(raw.get("TrainConfig", {})),
        image_limit=g.get("image_limit"), deploy_backend=targets[0], deploy_backends=targets, engine=engine, format=fmt,
        model_filename=g.get("model_filename"))


def _read_yaml(path: Path) -> dict:
    """The config file as a mapping (one-line errors for a missing file, bad YAML or another shape)."""
    import yaml

    if not path.is_file():
        raise FastdetError(f"compression config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise FastdetError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(raw, dict):
        raise FastdetError(f"{path}: expected a mapping with sections {', '.join(SCHEMA)}")
    return raw


def _check_schema(path: Path, raw: dict) -> None:
    """Every section and key known (SCHEMA) and of an accepted type."""
    for section, body in raw.items():
        if section not in SCHEMA:
            raise FastdetError(f"{path}: unknown section '{section}' (known: {', '.join(SCHEMA)})")
        if not isinstance(body, dict):
            raise FastdetError(f"{path}: section '{section}' must be a mapping")
        for key, value in body.items():
            allowed = SCHEMA[section]
            if key not in allowed:
                raise FastdetError(f"{path}: unknown key '{section}.{key}' (known: {', '.join(allowed)})")
            types = allowed[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                names = "/".join(t.__name__ for t in types)
                raise FastdetError(f"{path}: '{section}.{key}' must be {names}, got {type(value).__name__} {value!r}")
    if "QuantAware" in raw and "Quantization" in raw:
        raise FastdetError(f"{path}: give either 'QuantAware' or the older 'Quantization', not both")


def _checked_ptq(path: Path, ptq: dict, engine: QuantEngine, fmt: str, engine_given: bool) -> dict:
    """The PTQ section checked against the engine and the model's format, its search dataset resolved."""
    if fmt == "onnx" and ptq.get("skip_tensor_list"):
        raise FastdetError(f"{path}: PTQ.skip_tensor_list names Paddle tensors; an ONNX model's layers are kept "
                           "float by the sensitivity search (PTQ.max_map_drop)")
    if engine.ort:
        try:
            ort_method(ptq.get("calibration_method"))
        except FastdetError as e:
            raise FastdetError(f"{path}: {e}") from None
    else:
        _check_paddleslim_ptq(path, ptq, engine_given)
    if ptq.get("max_map_drop", 0) < 0:
        raise FastdetError(f"{path}: PTQ.max_map_drop must be ≥ 0 (mAP points), got {ptq['max_map_drop']}")
    if not 0 <= ptq.get("smooth_alpha", 0) <= 1:
        raise FastdetError(f"{path}: PTQ.smooth_alpha must be between 0 (off) and 1, got {ptq['smooth_alpha']}")
    if ptq.get("max_float_layers", 1) < 1:
        raise FastdetError(f"{path}: PTQ.max_float_layers must be ≥ 1, got {ptq['max_float_layers']}")
    if ptq.get("search_dataset"):
        ptq["search_dataset"] = _resolve(ptq["search_dataset"], path.resolve().parent)
    return ptq


def _check_paddleslim_ptq(path: Path, ptq: dict, engine_given: bool) -> None:
    """PaddleSlim's calibration method, and no key that only engine onnxruntime reads."""
    method = ptq.get("calibration_method", "avg")
    # the engine is paddleslim because the model is a Paddle program and Global.engine is unset: say which key
    # to change, not only what is wrong
    switch = "" if engine_given else " — or set Global.engine: onnxruntime (it quantizes Paddle models too)"
    if method not in CALIBRATION_METHODS:
        ours = next((m for m in CALIBRATION_METHODS if FROM_PADDLE_NAMES.get(m.lower()) == str(method).lower()),
                    None)
        raise FastdetError(f"{path}: PTQ.calibration_method '{method}' is not one of "
                           f"{', '.join(CALIBRATION_METHODS)} (engine paddleslim)"
                           + (f": PaddleSlim calls it '{ours}'" if ours else "") + switch)
    for key in ("per_channel", "reduce_range", "depthwise_channel_ranges", "smooth_alpha", "bias_correction"):
        if key in ptq:
            raise FastdetError(f"{path}: PTQ.{key} applies to engine onnxruntime only: remove it{switch}")


# what engine onnxruntime's QAT reads (compress/qdq_qat.py): it trains the INT8 graph itself, with its own loss
ORT_QAT_KEYS = {"TrainConfig": ("epochs", "learning_rate"), "Global": ("qat_batch_size", "qat_augment", "qat_patience",
                                                                             "qat_hold_scales", "qat_learn_rounding"),
                "QuantAware": (), "Quantization": (), "Distillation": ()}


def _check_ort_qat(path: Path, raw: dict) -> None:
    """No QAT key that only engine paddleslim (ACT) reads."""
    reads = ", ".join(f"{s}.{k}" for s, keys in ORT_QAT_KEYS.items() for k in keys)
    for section in ("QuantAware", "Quantization", "Distillation", "TrainConfig"):
        for key in raw.get(section) or {}:
            if key not in ORT_QAT_KEYS[section]:
                raise FastdetError(f"{path}: {section}.{key} applies to engine paddleslim's QAT only (engine "
                                   f"onnxruntime trains its INT8 graph and reads {reads})")
    if isinstance(raw.get("TrainConfig", {}).get("learning_rate"), dict):
        raise FastdetError(f"{path}: TrainConfig.learning_rate is a number for engine onnxruntime (a cosine decay "
                           "from it is built in)")


def installed_targets() -> tuple[str, ...]:
    """The ONNX forms whose runtime is installed here: every CPU backend's, and TensorRT's where TensorRT is."""
    import importlib.util

    out = []
    for name, t in DEPLOY_TARGETS.items():
        if t.backend_spec is None:
            if importlib.util.find_spec("tensorrt") is not None:
                out.append(name)
            continue
        try:
            t.backend_spec.check_can_run()
        except FastdetError:
            continue
        out.append(name)
    return tuple(out)


def deploy_targets(value, engine: QuantEngine, where: str) -> tuple[str, ...]:
    """Global.deploy_backend as the forms to make: one name, a list, or 'all'; unset: one form per installed
    runtime for engine onnxruntime (its graph differs per runtime), the ONNX Runtime flavour for PaddleSlim (one
    program suits every backend; the flavour is only that of its ONNX export)."""
    if value is None:
        return installed_targets() if engine.ort else (DEFAULT_TARGET,)
    names = list(DEPLOY_BACKENDS) if value == "all" else [value] if isinstance(value, str) else value
    bad = [str(v) for v in names if v not in DEPLOY_BACKENDS]
    if bad or not names:
        raise FastdetError(f"{where} must be one of {', '.join(DEPLOY_BACKENDS)}, a list of them, or 'all'"
                           + (f" (got {', '.join(bad)})" if bad else " (got an empty list)"))
    if len(names) > 1 and not engine.ort:
        raise FastdetError(f"{where}: several forms are made by engine onnxruntime; engine {engine} writes one "
                           "program that every backend runs")
    return tuple(dict.fromkeys(names))


def qat_image_dir(cfg: CompressConfig) -> str:
    g = cfg.raw.get("Global", {})
    value = g.get("qat_image_path") or g.get("image_path") or g.get("ptq_image_path")
    return _resolve(value, cfg.path.resolve().parent) if value else "default"
