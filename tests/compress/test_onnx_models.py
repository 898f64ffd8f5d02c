"""Issue 14: a detector the user has only as ONNX (+ its deploy config) goes through compress, eval, bench and
diff; without labels, agreement with the FP32 model stands in for mAP."""
import json
import shutil

import numpy as np
import pytest
import yaml

from fastdet_cli.cli import main
from fastdet_cli.runtime.registry import BACKENDS

pytestmark = pytest.mark.paddle


@pytest.fixture(scope="module")
def onnx_only(tmp_path_factory, val_dataset):
    """The embedded model exported with its multiclass NMS kept in the graph, then everything but model.onnx and
    the deploy config removed (no Paddle files, no fastdet.yml): what a user who got an ONNX file holds. Also an
    unlabelled folder of 24 val images."""
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("onnx_only")
    export_onnx(resolve_model("default"), root / "export", remove_nms=False)
    model = root / "model"
    model.mkdir()
    shutil.copy(root / "export" / "model.onnx", model / "detector.onnx")
    shutil.copy(root / "export" / "infer_cfg.yml", model / "infer_cfg.yml")
    images = root / "images"
    images.mkdir()
    for _, p in val_dataset.image_paths(limit=24):
        shutil.copy(p, images / p.name)
    return model, images


@pytest.fixture(scope="module")
def compressed(onnx_only, tmp_path_factory):
    model, images = onnx_only
    cfg = tmp_path_factory.mktemp("cfg") / "onnx_ptq.yaml"
    cfg.write_text(yaml.safe_dump({
        "Global": {"model_dir": str(model), "format": "onnx", "model_filename": "detector.onnx",
                   "ptq_image_path": "default", "eval_dataset": str(images), "deploy_backend": "onnxruntime"},
        "PTQ": {"calibration_method": "percentile", "batch_size": 4, "batch_nums": 4, "max_map_drop": 2.0,
                "search_dataset": str(images), "max_float_layers": 2}}))
    out = cfg.parent / "int8"
    assert main(["compress", str(cfg), "--save-dir", str(out)]) == 0
    return out


def test_compress_onnx_model_gives_int8_that_ort_runs_as_int8(compressed, onnx_only):
    from fastdet_cli.inspection import inspect_model

    model, _ = onnx_only
    report = json.loads((compressed / "compress_report.json").read_text())
    assert report["engine"] == "onnxruntime" and report["source_format"] == "onnx"
    assert (compressed / "infer_cfg.yml").read_bytes() == (model / "infer_cfg.yml").read_bytes()
    side = yaml.safe_load((compressed / "fastdet.yml").read_text())
    assert side["nms"]["score_threshold"] < 0.3 and side["nms"]["nms_threshold"] == pytest.approx(0.6)  # the graph's
    # agreement with FP32's own detections (FP32 scores 1.0 against itself by construction: INT8's figure is the
    # one that says something): INT8 changed the detections, a little
    m, search = report["map"], report["sensitivity_search"]
    assert m["metric"] == "agreement mAP" and 0.9 < m["int8"]["AP"] < 1.0, m
    # the written model is the one the search chose: the report's evaluation of it (same images, same backend)
    # gives the agreement the search measured for it, and the search's verdict follows its own figures
    assert search["reason"] == "PTQ.search_dataset" and search["dataset"] == m["dataset"]
    assert m["int8"]["AP"] == pytest.approx(search["chosen_map"], abs=1e-4), (m, search)
    assert search["met"] == (100 * (search["fp32_map"] - search["chosen_map"]) <= search["max_drop_points"])
    int8_convs, float_convs = inspect_model(str(compressed), BACKENDS["ort"], runs=2).convs()
    assert int8_convs > 50 and float_convs <= 2


def test_eval_reference_gives_agreement(compressed, onnx_only, tmp_path, capsys):
    model, images = onnx_only
    out = tmp_path / "agree.json"
    assert main(["eval", "--model", str(compressed), "--reference", "fp32", "--dataset", str(images),
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["metric"] == "agreement" and 0.9 < data["stats"]["AP"] < 1.0
    assert "agreement mAP" in capsys.readouterr().out
    # the FP32 model named by its path rather than as 'fp32' (found through the INT8 model's report): the same
    # reference, the same agreement (a reference resolved to anything else, the INT8 model itself included, differs)
    again = tmp_path / "again.json"
    assert main(["eval", "--model", str(compressed), "--reference", str(model / "detector.onnx"),
                 "--dataset", str(images), "--json", str(again)]) == 0
    named = json.loads(again.read_text())
    assert named["reference"] == data["reference"] and named["stats"]["AP"] == pytest.approx(data["stats"]["AP"])


@pytest.mark.openvino
def test_bench_onnx_model_fills_onnx_rows_and_says_why_paddle_cannot(compressed, onnx_only, tmp_path):
    from fastdet_cli import api
    from fastdet_cli.bench.run import BenchSettings
    from fastdet_cli.render.bench import header

    model, images = onnx_only
    report = api.bench(BenchSettings(model=str(model / "detector.onnx"), int8_models=(str(compressed),),
                                     backends=("ort", "openvino", "paddle"), repeat=3, warmup=1,
                                     dataset=str(images), eval_limit=10), log=lambda m: None)
    typed, report = report, report.as_dict()
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    for b in ("ort", "openvino"):
        assert rows[(b, "fp32")]["status"] == "ok" and rows[(b, "int8")]["status"] == "ok"
        # each backend's FP32 detections are its reference (FP32 scores 1.0 by construction): INT8's agreement
        assert 0.9 < rows[(b, "int8")]["map"] < 1.0, rows[(b, "int8")]
    # bench labels the images with the FP32 model cut before its NMS (fastdet's NMS on the host); `eval
    # --reference fp32` with the model as given (ONNX Runtime's NMS in the graph): the same agreement either way
    ev = tmp_path / "eval.json"
    assert main(["eval", "--model", str(compressed), "--reference", "fp32", "--dataset", str(images), "--limit", "10",
                 "-b", "ort", "--json", str(ev)]) == 0
    assert json.loads(ev.read_text())["stats"]["AP"] == pytest.approx(rows[("ort", "int8")]["map"], abs=1e-3)
    assert rows[("paddle", "fp32")]["status"] == "None"
    assert rows[("paddle", "fp32")]["why"].startswith("Paddle Inference needs a Paddle program")
    assert "FP32 agreement mAP" in header(typed) and "FP32 mAP" not in header(typed)
    assert main(["diff", str(images), "--model", str(model / "detector.onnx"), "--int8-model", str(compressed),
                 "--limit", "4", "--save-dir", str(tmp_path / "diff")]) == 0
    assert len(json.loads((tmp_path / "diff" / "diff.json").read_text())["images"]) == 4


def test_raw_heads_without_fpn_stride_derive_it(tiny_models, tmp_path, sample_image):
    from fastdet_cli.artifacts import detector
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.export.onnx import export_onnx

    export_onnx(resolve_model(tiny_models["raw_heads"]), tmp_path / "with")
    shutil.copytree(tmp_path / "with", tmp_path / "without")
    cfg_path = next(p for p in (tmp_path / "without").iterdir()
                    if p.suffix in (".yml", ".yaml") and p.name != "fastdet.yml")
    cfg = yaml.safe_load(cfg_path.read_text())
    strides = cfg.pop("fpn_stride")
    cfg_path.write_text(yaml.safe_dump(cfg))
    with detector(tmp_path / "with", BACKENDS["ort"]) as a, detector(tmp_path / "without", BACKENDS["ort"]) as b:
        da, db = a(sample_image), b(sample_image)
        assert len(da) > 0 and np.array_equal(da.boxes, db.boxes) and np.array_equal(da.scores, db.scores)
        assert not a.notes and len(b.notes) == 1 and f"derived {strides}" in b.notes[0]


def test_onnx_bad_inputs_are_one_line_errors(onnx_only, tmp_path, capsys):
    model, images = onnx_only
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model / "detector.onnx", bare / "model.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ({"model_dir": str(bare), "format": "onnx"}, {}, "no deploy config"),
        ({"model_dir": str(model), "format": "onnx", "model_filename": "detector.onnx"},
         {"QuantAware": {"use_pact": False}}, "QuantAware.use_pact applies to engine paddleslim's QAT only"),
        ({"model_dir": str(model), "format": "onnx", "ptq_image_path": str(empty)}, {}, "no images in"),
        ({"model_dir": "default", "format": "onnx"}, {}, "Global.format is onnx but"),
    ]
    for g, extra, words in cases:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({"Global": g, "PTQ": {"batch_nums": 1}, **extra}))
        assert main(["compress", str(cfg), "--save-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
