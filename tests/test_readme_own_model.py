"""The README's "Bring your own model" steps, as written, so they cannot rot: the shipped template
(configs/onnx_ptq_example.yaml) with only its paths set — an ONNX model, and a Paddle export (`format: paddle`,
`model_filename` dropped, as step 3 says) — then `fastdet compress`, `fastdet bench --int8-model`, `fastdet diff`.
Slow (about 3 minutes per model: both forms, the calibration choice and the search); CI runs it (.ci/run)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from fastdet_cli.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "configs" / "onnx_ptq_example.yaml"
README = ROOT / "README.md"

pytestmark = [pytest.mark.slow, pytest.mark.paddle, pytest.mark.openvino]


def _user_folder(tmp_path: Path, fmt: str, val_dataset) -> Path:
    """What a user has: their model in ../my_model, images in ../calib_images and ../val_images, a copy of the
    template in cfg/ with the paths it names (so nothing in it changes but what step 3 says)."""
    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.det.model import resolve_model

    src = resolve_model("default")
    model = tmp_path / "my_model"
    if fmt == "onnx":
        export = onnx_for(src)
        model.mkdir()
        shutil.copy(export.path, model / "model.onnx")
        shutil.copy(export.deploy.path, model / export.deploy.path.name)
    else:
        shutil.copytree(src.dir, model)
    images = [p for _, p in val_dataset.image_paths(limit=16)]
    for name, part in (("calib_images", images[:8]), ("val_images", images[8:])):
        (tmp_path / name).mkdir()
        for p in part:
            shutil.copy(p, tmp_path / name / p.name)
    cfg = tmp_path / "cfg" / "my.yaml"
    cfg.parent.mkdir()
    text = TEMPLATE.read_text()
    if fmt == "paddle":  # step 3: "for a Paddle export set format: paddle and drop model_filename"
        text = re.sub(r"\n  format: onnx\n", "\n  format: paddle\n", text)
        text = re.sub(r"\n  model_filename: [^\n]*\n", "\n", text)
    cfg.write_text(text)
    return cfg


def test_readme_names_the_template_and_the_commands():
    text = README.read_text()
    assert "configs/onnx_ptq_example.yaml" in text and "for a Paddle export set `format: paddle` and drop" in text
    for command in ("fastdet compress my.yaml --save-dir out/int8",
                    "fastdet bench --model MODEL --int8-model out/int8 --dataset HELD_OUT --report out/bench",
                    "fastdet diff HELD_OUT --model MODEL --int8-model out/int8 --save-dir out/diff"):
        assert command in text


@pytest.mark.parametrize("fmt", ["onnx", "paddle"])
def test_own_model_steps_run_as_written(fmt, tmp_path, val_dataset, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    cfg = _user_folder(tmp_path, fmt, val_dataset)
    raw = yaml.safe_load(cfg.read_text())
    assert raw["Global"]["format"] == fmt and ("model_filename" in raw["Global"]) == (fmt == "onnx")
    out = tmp_path / "out"
    model = str(tmp_path / "my_model" / "model.onnx") if fmt == "onnx" else str(tmp_path / "my_model")
    held = str(tmp_path / "val_images")
    assert main(["compress", str(cfg), "--save-dir", str(out / "int8")]) == 0
    top = json.loads((out / "int8" / "compress_report.json").read_text())
    assert set(top["forms"]) >= {"onnxruntime", "openvino"}  # every installed runtime's form, nothing set for it
    for form in top["forms"].values():
        report = json.loads((out / "int8" / form["dir"] / "compress_report.json").read_text())
        assert report["config_resolved"]["calibration_strategy"]["chosen"]  # chosen, not set by hand
        assert report["map"]["metric"] == "agreement mAP"  # val_images measured, never tuned on
    assert main(["bench", "--model", model, "--int8-model", str(out / "int8"), "--dataset", held, "--report",
                 str(out / "bench"), "--backend", "ort,openvino", "--repeat", "3", "--warmup", "1", "--no-bf16"]) == 0
    rows = {(r["backend"], r["precision"]): r for r in json.loads((out / "bench" / "report.json").read_text())["rows"]}
    for backend, form in (("ort", "onnxruntime"), ("openvino", "openvino")):
        assert rows[(backend, "int8")]["status"] == "ok"
        assert rows[(backend, "int8")]["int8_artifact"]["path"] == str(out / "int8" / form)
    assert main(["diff", held, "--model", model, "--int8-model", str(out / "int8"), "--save-dir",
                 str(out / "diff")]) == 0
    assert (out / "diff" / "diff.json").is_file() and (out / "diff" / "montage.png").is_file()
