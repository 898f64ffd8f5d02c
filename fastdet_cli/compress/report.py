"""compress_report.json as typed objects: `CompressReport` for one INT8 model folder, `FormsReport` for a folder
holding one form per deploy target (each form a model folder with its own `CompressReport`).

`as_dict()` is the JSON written, key for key and in the same order; `from_dict()` reads it back, and a report
missing a key it must have is refused with a one-line FastdetError. The parts whose keys depend on the engine stay
dicts: the engine's resolved settings (`config_resolved`), the sensitivity search's record, Paddle's INT8 op-set
measurements and the library versions."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:
    from fastdet_cli.export.targets import OnnxTarget

REPORT_FILE = "compress_report.json"


def _checked(d: Any, keys, what: str) -> dict:
    if not isinstance(d, dict):
        raise FastdetError(f"{what}: expected a mapping, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise FastdetError(f"{what} lacks {', '.join(missing)} (not a compress report of this fastdet version)")
    return d


def _names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


@dataclass
class Images:
    """The calibration/training images the engine ran on."""

    source: str  # what the config named: 'default', an image folder or a COCO dir
    count: int
    first: list[str]  # the first three files

    def as_dict(self) -> dict:
        return {"source": self.source, "count": self.count, "first": list(self.first)}

    @classmethod
    def from_dict(cls, d: dict) -> Images:
        d = _checked(d, _names(cls), f"{REPORT_FILE} images")
        return cls(d["source"], d["count"], list(d["first"]))


@dataclass
class SizeBytes:
    """Bytes of the model files (.pdmodel, .pdiparams, .onnx) of the FP32 and the INT8 model folders."""

    fp32: int
    int8: int

    def as_dict(self) -> dict:
        return {"fp32": self.fp32, "int8": self.int8}

    @classmethod
    def from_dict(cls, d: dict) -> SizeBytes:
        d = _checked(d, _names(cls), f"{REPORT_FILE} size_bytes")
        return cls(d["fp32"], d["int8"])


@dataclass
class ApStats:
    """COCO mAP@[.5:.95], @.5 and @.75 (JSON keys AP, AP50, AP75)."""

    ap: float
    ap50: float
    ap75: float

    def as_dict(self) -> dict:
        return {"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75}

    @classmethod
    def from_dict(cls, d: dict) -> ApStats:
        d = _checked(d, ("AP", "AP50", "AP75"), f"{REPORT_FILE} map")
        return cls(d["AP"], d["AP50"], d["AP75"])


@dataclass
class MapComparison:
    """FP32 vs INT8 mAP on the runtime the INT8 model is made for (the report's "map")."""

    dataset: str  # its label (the annotation file, or the image folder labelled by the FP32 model)
    backend: str  # the fastdet backend both ran on
    runtime: str  # that runtime's name, as the tables print it
    metric: str  # "COCO mAP" or "agreement mAP"
    reference: str | None  # agreement mAP: the model whose detections are the ground truth
    fp32: ApStats
    int8: ApStats

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "backend": self.backend, "runtime": self.runtime, "metric": self.metric,
                "reference": self.reference, "fp32": self.fp32.as_dict(), "int8": self.int8.as_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> MapComparison:
        d = _checked(d, _names(cls), f"{REPORT_FILE} map")
        return cls(d["dataset"], d["backend"], d["runtime"], d["metric"], d["reference"],
                   ApStats.from_dict(d["fp32"]), ApStats.from_dict(d["int8"]))


@dataclass
class Distributed:
    """A run under paddle.distributed.launch: the processes, each one's images, and the engine's own record."""

    world_size: int
    images_per_rank: list[int] | None
    details: dict = field(default_factory=dict)  # e.g. parameter_averaging, weights_identical_across_ranks

    @property
    def weights_identical(self) -> bool | None:
        """Whether the ranks ended with the same weights (checked on CPU runs; None: not checked)."""
        return self.details.get("weights_identical_across_ranks")

    def as_dict(self) -> dict:
        return {"world_size": self.world_size, "images_per_rank": self.images_per_rank, **self.details}

    @classmethod
    def from_dict(cls, d: dict) -> Distributed:
        d = _checked(d, ("world_size", "images_per_rank"), f"{REPORT_FILE} distributed")
        return cls(d["world_size"], d["images_per_rank"],
                   {k: v for k, v in d.items() if k not in ("world_size", "images_per_rank")})


@dataclass
class CompressReport:
    """One INT8 model folder's compress_report.json (fields in the file's order)."""

    method: str  # ptq | qat
    engine: str  # paddleslim | onnxruntime
    method_label: str
    format: str  # of the INT8 model: paddle | onnx
    config_file: str
    config_resolved: dict  # the engine's resolved settings
    model_fp32: str  # the model the config names, as its runner loads it
    deploy_config: str  # the FP32 deploy config's file name, copied unchanged beside the INT8 model
    source_format: str
    converted_fp32: str | None  # the x2paddle conversion quantized in its place (an ONNX model, engine paddleslim)
    input_list: list[str]
    preprocess: str
    images: Images
    kept_float: list[str]  # layers left in float (weight names, or ONNX node names for engine onnxruntime)
    sensitivity_search: dict | None  # the search's record (PTQ.max_map_drop)
    integer_weight_convs_rewritten: list[str]
    paddle_int8_ops: str | None  # the oneDNN INT8 op set Paddle Inference runs ('conv' or 'all')
    paddle_int8_ops_measured: dict | None
    size_bytes: SizeBytes
    met: bool | None  # the accuracy budget (PTQ.max_map_drop), when one was set
    seconds: float
    devices: str
    versions: dict
    map: MapComparison | None = None
    distributed: Distributed | None = None

    def as_dict(self) -> dict:
        out = {name: getattr(self, name) for name in _names(self)}
        out.update(images=self.images.as_dict(), size_bytes=self.size_bytes.as_dict(),
                   map=self.map.as_dict() if self.map else None,
                   distributed=self.distributed.as_dict() if self.distributed else None)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> CompressReport:
        d = _checked(d, _names(cls), REPORT_FILE)
        return cls(**{**{name: d[name] for name in _names(cls)},
                      "images": Images.from_dict(d["images"]), "size_bytes": SizeBytes.from_dict(d["size_bytes"]),
                      "map": MapComparison.from_dict(d["map"]) if d["map"] is not None else None,
                      "distributed": Distributed.from_dict(d["distributed"]) if d["distributed"] is not None
                      else None})


FORM_SEARCH_KEYS = ("chosen_drop_points", "max_drop_points", "chosen_runtime_ms", "chosen_fp32_runtime_ms",
                    "fp32_graph", "kept_float")  # what a multi-form report repeats of each form's search


@dataclass
class FormSummary:
    """One form of a multi-form output, as the top report lists it (the form's own report is in its folder)."""

    dir: str  # its folder, relative to the output folder
    backend: str | None  # the fastdet backend it is made for (None: not on a CPU, TensorRT)
    met: bool | None
    seconds: float
    map: MapComparison | None
    sensitivity_search: dict | None  # FORM_SEARCH_KEYS of the form's search

    @classmethod
    def of(cls, target: OnnxTarget, report: CompressReport) -> FormSummary:
        search = report.sensitivity_search
        return cls(target.name, target.backend, report.met, report.seconds, report.map,
                   {k: search.get(k) for k in FORM_SEARCH_KEYS} if search else None)

    def as_dict(self) -> dict:
        return {"dir": self.dir, "backend": self.backend, "met": self.met, "seconds": self.seconds,
                "map": self.map.as_dict() if self.map else None, "sensitivity_search": self.sensitivity_search}

    @classmethod
    def from_dict(cls, d: dict) -> FormSummary:
        d = _checked(d, _names(cls), f"{REPORT_FILE} forms")
        return cls(d["dir"], d["backend"], d["met"], d["seconds"],
                   MapComparison.from_dict(d["map"]) if d["map"] is not None else None, d["sensitivity_search"])


@dataclass
class FormsReport:
    """The compress_report.json of an output folder holding one INT8 form per deploy target (engine onnxruntime,
    several Global.deploy_backend values)."""

    method: str
    engine: str
    method_label: str
    format: str
    config_file: str
    model_fp32: str
    forms: dict[str, FormSummary]  # deploy target → its form
    met: bool | None  # every form within its budget (None: no budget set)
    seconds: float
    calibration_passes: int | None  # passes of the calibration images, shared by the forms

    def as_dict(self) -> dict:
        out = {name: getattr(self, name) for name in _names(self)}
        out["forms"] = {target: form.as_dict() for target, form in self.forms.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> FormsReport:
        d = _checked(d, _names(cls), REPORT_FILE)
        forms = _checked(d["forms"], (), f"{REPORT_FILE} forms")
        return cls(**{**{name: d[name] for name in _names(cls)},
                      "forms": {target: FormSummary.from_dict(f) for target, f in forms.items()}})


def report_from_dict(d: dict) -> CompressReport | FormsReport:
    """A compress_report.json's content as its typed report (a multi-form one has `forms`)."""
    return FormsReport.from_dict(d) if isinstance(d, dict) and "forms" in d else CompressReport.from_dict(d)


def read_report(folder: Path) -> CompressReport | FormsReport:
    """The compress_report.json in `folder`, typed."""
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        raise FastdetError(f"{folder} has no {REPORT_FILE} (not a fastdet compress output)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FastdetError(f"{path}: not valid JSON: {e}") from e
    return report_from_dict(d)


def write_report(out_dir: Path, report: CompressReport | FormsReport) -> None:
    (out_dir / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")


def versions() -> dict[str, str | None]:
    """The versions of fastdet, PaddleSlim, paddle2onnx and every backend's library (None: not installed), as the
    compress and bench reports record them."""
    import importlib.metadata as md

    out = {}
    from fastdet_cli.runtime.registry import BACKENDS

    for dist in ("fastdet-cli", "paddleslim", "paddle2onnx"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    for spec in BACKENDS.values():  # under the backend's main name, whichever of its names is installed
        out[spec.dist] = out.get(spec.dist) or spec.version()
    return out
