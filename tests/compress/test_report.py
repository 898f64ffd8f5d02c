"""compress_report.json as typed objects: a real report read with `from_dict` gives back the same JSON with
`as_dict` (the file's bytes, key order included), and a report missing a key it must have is a one-line error."""
from __future__ import annotations

import json

import pytest

from fastdet_cli.compress.report import (CompressReport, FormsReport, FormSummary, MapComparison, read_report,
                                         report_from_dict)
from fastdet_cli.errors import FastdetError


def _file(folder) -> tuple[str, dict]:
    text = (folder / "compress_report.json").read_text()
    return text, json.loads(text)


@pytest.mark.paddle
@pytest.mark.parametrize("kind", ["paddle-program", "ort-qdq"])
def test_real_report_round_trips(default_artifacts, kind):
    """The embedded model's two cached INT8 versions (PaddleSlim PTQ, ONNX Runtime PTQ with its search)."""
    text, d = _file(default_artifacts[kind])
    report = CompressReport.from_dict(d)
    assert report.as_dict() == d
    assert json.dumps(report.as_dict(), indent=2, default=str) + "\n" == text  # written as it was: order too
    assert isinstance(read_report(default_artifacts[kind]), CompressReport)
    # the typed fields are the file's values
    assert report.images.count == d["images"]["count"] > 0 and report.size_bytes.int8 == d["size_bytes"]["int8"]
    assert report.engine == ("paddleslim" if kind == "paddle-program" else "onnxruntime")
    assert report.met is True and report.sensitivity_search["target_reached"] is True


def _report_dict(**changes) -> dict:
    d = {"method": "ptq", "engine": "onnxruntime", "method_label": "PTQ (ORT)", "format": "onnx",
         "config_file": "/c.yaml", "config_resolved": {"target": "onnxruntime"}, "model_fp32": "/m",
         "deploy_config": "infer_cfg.yml", "source_format": "paddle", "converted_fp32": None,
         "input_list": ["image"], "preprocess": "Decode(BGR→RGB) → Resize",
         "images": {"source": "default", "count": 8, "first": ["a.jpg"]}, "kept_float": [],
         "sensitivity_search": None, "integer_weight_convs_rewritten": [], "paddle_int8_ops": None,
         "paddle_int8_ops_measured": None, "size_bytes": {"fp32": 10, "int8": 4}, "met": None, "seconds": 1.5,
         "devices": "cpu", "versions": {"onnxruntime": "1.32.0"},
         "map": {"dataset": "/d/instances_val.json", "backend": "ort", "runtime": "ONNX Runtime",
                 "metric": "COCO mAP", "reference": None, "fp32": {"AP": 0.5, "AP50": 0.7, "AP75": 0.5},
                 "int8": {"AP": 0.49, "AP50": 0.69, "AP75": 0.48}},
         "distributed": {"world_size": 2, "images_per_rank": [4, 4], "averaged_steps": 3,
                         "weights_identical_across_ranks": True}}
    d.update(changes)
    return d


def test_nested_parts_are_typed_and_round_trip():
    d = _report_dict()
    report = CompressReport.from_dict(d)
    assert isinstance(report.map, MapComparison) and report.map.int8.ap == 0.49 and report.map.fp32.ap50 == 0.7
    assert report.distributed.world_size == 2 and report.distributed.weights_identical is True
    assert report.as_dict() == d and list(report.as_dict()) == list(d)
    assert list(report.as_dict()["distributed"]) == list(d["distributed"])


@pytest.mark.parametrize("where", ["top", "images", "map", "forms"])
def test_a_report_missing_a_required_key_is_a_one_line_error(where):
    d = _report_dict()
    if where == "top":
        del d["size_bytes"]
    elif where == "images":
        del d["images"]["count"]
    elif where == "map":
        del d["map"]["int8"]["AP50"]
    if where == "forms":
        d = {"forms": {"openvino": {"dir": "openvino", "met": None}}}
        with pytest.raises(FastdetError, match="lacks method, engine") as e:
            report_from_dict(d)
    else:
        with pytest.raises(FastdetError, match="lacks") as e:
            CompressReport.from_dict(d)
    assert "\n" not in str(e.value)
    with pytest.raises(FastdetError, match="expected a mapping"):
        CompressReport.from_dict(["not", "a", "report"])


def test_forms_report_lists_each_forms_summary():
    from fastdet_cli.export.targets import ONNX_TARGETS

    one = CompressReport.from_dict(_report_dict(
        met=True, sensitivity_search={"chosen_drop_points": 0.3, "max_drop_points": 0.5, "steps": [],
                                      "kept_float": ["Conv.1"]}))
    form = FormSummary.of(ONNX_TARGETS["openvino"], one)
    assert (form.dir, form.backend, form.met, form.map) == ("openvino", "openvino", True, one.map)
    assert form.sensitivity_search == {"chosen_drop_points": 0.3, "max_drop_points": 0.5, "chosen_runtime_ms": None,
                                       "chosen_fp32_runtime_ms": None, "fp32_graph": None, "kept_float": ["Conv.1"]}
    top = FormsReport("ptq", "onnxruntime", "PTQ (ORT)", "onnx", "/c.yaml", "/m", {"openvino": form}, True, 3.0, 1)
    d = json.loads(json.dumps(top.as_dict()))
    assert isinstance(report_from_dict(d), FormsReport) and report_from_dict(d).as_dict() == d
    assert d["forms"]["openvino"]["map"]["int8"]["AP"] == 0.49


def test_summary_names_the_images_qat_held_back_and_escapes_the_source():
    """compress's summary table: QAT's held-back images beside the trained count; a folder name with rich markup
    is shown as typed."""
    from rich.console import Console

    from fastdet_cli.commands.compress import _report_table

    def shown(**changes) -> str:
        console = Console(width=200, record=True)
        console.print(_report_table(CompressReport.from_dict(_report_dict(**changes)), "out"))
        return console.export_text()

    qat = shown(images={"source": "pages/[calib]", "count": 15, "first": ["a.jpg"]},
                config_resolved={"holdout_images": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]})
    assert "15 from pages/[calib] (+4 held back for the agreement check)" in qat
    assert "held back" not in shown()
