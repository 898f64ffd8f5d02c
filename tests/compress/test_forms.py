"""One `fastdet compress`, several INT8 forms (engine onnxruntime, `Global.deploy_backend` a list, 'all' or unset):
one output folder holds one complete model folder per deploy target, its compress_report.json lists them, and the
commands given that folder run the form made for their backend."""
from __future__ import annotations

import json

import pytest

from fastdet_cli.compress.config import installed_targets, load_compress_config
from fastdet_cli.errors import FastdetError
from fastdet_cli.runtime.registry import BACKENDS

pytestmark = pytest.mark.paddle  # the embedded model is a Paddle program (exported to ONNX first)


def _config(tmp_path, deploy: str | None, engine: str = "onnxruntime") -> object:
    line = f"  deploy_backend: {deploy}\n" if deploy is not None else ""
    path = tmp_path / f"forms_{abs(hash(deploy))}.yaml"
    path.write_text("Global:\n  model_dir: default\n  format: paddle\n  ptq_image_path: default\n"
                    f"  engine: {engine}\n{line}"
                    f"PTQ:\n  calibration_method: {'percentile' if engine == 'onnxruntime' else 'hist'}\n"
                    "  batch_size: 4\n  batch_nums: 2\n")
    return path


def test_deploy_backend_forms_from_the_config(tmp_path):
    assert load_compress_config(_config(tmp_path, "[onnxruntime, openvino]")).deploy_backends == (
        "onnxruntime", "openvino")
    assert load_compress_config(_config(tmp_path, "all")).deploy_backends == ("onnxruntime", "openvino", "tensorrt")
    cfg = load_compress_config(_config(tmp_path, None))  # unset: every installed runtime's form
    assert cfg.deploy_backends == installed_targets() and cfg.deploy_backend == installed_targets()[0]
    assert "onnxruntime" in installed_targets()
    assert load_compress_config(_config(tmp_path, None, "paddleslim")).deploy_backends == ("onnxruntime",)
    with pytest.raises(FastdetError, match=r"Global.deploy_backend must be one of .* \(got ort\)"):
        load_compress_config(_config(tmp_path, "[onnxruntime, ort]"))
    with pytest.raises(FastdetError, match="several forms are made by engine onnxruntime"):
        load_compress_config(_config(tmp_path, "[onnxruntime, openvino]", "paddleslim"))


@pytest.mark.openvino
def test_one_compress_two_forms_each_backend_runs_its_own(tmp_path, capsys, monkeypatch):
    from fastdet_cli.agreement import fp32_of
    from fastdet_cli.artifacts import choose, describe_all, detector, forms
    from fastdet_cli.cli import main
    from fastdet_cli.inspection import inspect_model

    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "int8"
    assert main(["compress", str(_config(tmp_path, "[onnxruntime, openvino]")), "--save-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "form for onnxruntime" in printed and "form for openvino" in printed and "2 forms in" in printed
    top = json.loads((out / "compress_report.json").read_text())
    assert set(top["forms"]) == {"onnxruntime", "openvino"} and top["method_label"] == "PTQ (ORT)"
    assert forms(out) == {"onnxruntime": out / "onnxruntime", "openvino": out / "openvino"}
    for target, d in forms(out).items():  # each form is a complete model folder with its own report
        report = json.loads((d / "compress_report.json").read_text())
        assert report["config_resolved"]["target"] == target and (d / "model.onnx").is_file()
        assert (d / "infer_cfg.yml").is_file()
    assert not list(tmp_path.glob(".int8.tmp-*"))  # nothing half-written left beside it
    # ORT's form quantizes convolution outputs (integer kernels), OpenVINO's only their inputs
    arts = describe_all(out)
    assert sorted(a.kind for a in arts) == ["onnx-qdq", "ort-qdq"]
    assert choose(BACKENDS["ort"], arts).path == out / "onnxruntime"
    assert choose(BACKENDS["openvino"], arts).path == out / "openvino"
    with detector(out, BACKENDS["openvino"]) as det:
        assert det.source.dir == out / "openvino"
    assert inspect_model(str(out), BACKENDS["ort"], runs=1).model == str(out / "onnxruntime" / "model.onnx")
    assert fp32_of(out) == top["model_fp32"]
    # the folder as bench's --int8-model: each backend's INT8 row names its own form
    from fastdet_cli import api
    from fastdet_cli.bench.run import BenchSettings

    report = api.bench(BenchSettings(int8_models=(str(out),), backends=("ort", "openvino"), repeat=2, warmup=1,
                                     eval=False, end2end=False, bf16=False), log=lambda m: None).as_dict()
    rows = {r["backend"]: r for r in report["rows"] if r["precision"] == "int8"}
    assert rows["ort"]["int8_artifact"]["path"] == str(out / "onnxruntime")
    assert rows["openvino"]["int8_artifact"]["path"] == str(out / "openvino")
