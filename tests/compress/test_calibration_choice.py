"""`PTQ.calibration_method: auto` (engine onnxruntime, the default when unset): every calibration ORT offers is
tried on half of the calibration images and measured on the other half, the best is used, and the report says what
was tried — reading calibration images only."""
from __future__ import annotations

import json

import pytest

from fastdet_cli.compress.calibration_choice import CALIBRATIONS

pytestmark = pytest.mark.paddle  # the embedded model is a Paddle program (exported to ONNX first)


def test_auto_calibration_tries_each_and_keeps_the_best(tmp_path):
    from fastdet_cli.compress import compress
    from fastdet_cli.compress.samples import image_list
    config = tmp_path / "auto.yaml"
    config.write_text("Global:\n  model_dir: default\n  format: paddle\n  engine: onnxruntime\n"
                      "  deploy_backend: onnxruntime\n  ptq_image_path: default\n"
                      "PTQ:\n  batch_size: 4\n  batch_nums: 2\n")
    result = compress(config, "ptq", tmp_path / "out", log=lambda m: None)
    resolved = result.report.config_resolved
    record = resolved["calibration_strategy"]
    assert resolved["calibration_method_asked"] == "auto (unset)"
    assert [t["calibration"] for t in record["tried"]] == [f"{m} {p:g}" if p else m for m, p in CALIBRATIONS]
    best = max(t["agreement_map"] for t in record["tried"])
    chosen = next(t for t in record["tried"] if t["calibration"] == record["chosen"])
    assert chosen["agreement_map"] == best and 0.0 <= best <= 1.0
    assert resolved["calibrate_method"] == chosen["method"] and resolved.get("percentile") == chosen["percentile"]
    assert sum(record["halves"]) == resolved["images_used"] == 8
    assert all(len(t["agreement_map_folds"]) == 2 and t["agreement_map"] == pytest.approx(
        sum(t["agreement_map_folds"]) / 2, abs=1e-4) for t in record["tried"])
    # each half measures the calibration made on the other: calibration images, nothing else
    calib = [str(p) for p in image_list("default", 8)]
    assert record["measure_files"] == [calib[4:], calib[:4]]
    assert json.loads((tmp_path / "out" / "compress_report.json").read_text())["config_resolved"][
        "calibration_strategy"]["chosen"] == record["chosen"]
