"""`fastdet diff`: matching FP32 and INT8 detections, and the files it writes."""
import json

import cv2
import numpy as np
import pytest

from fastdet_cli.cli import main
from fastdet_cli.det.postprocess import Detections
from fastdet_cli.diff import compare


def _det(rows):
    arr = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64))


def test_hand_made_pair_gives_expected_matches():
    fp32 = _det([[0, 0, 10, 10, 0.9, 0],     # INT8 finds it shifted by 1 px: matched
                 [20, 20, 30, 30, 0.8, 1],   # INT8 finds it as class 2: missed (and an extra)
                 [40, 40, 50, 50, 0.7, 0]])  # INT8 misses it
    int8 = _det([[1, 0, 11, 10, 0.85, 0],
                 [20, 20, 30, 30, 0.6, 2],
                 [60, 60, 70, 70, 0.5, 1]])  # only INT8 has it: extra
    d, m = compare(fp32, int8, ["a", "b", "c"])
    assert (d.matched, d.missed, d.extra) == (1, 2, 2)
    assert m.pairs[0][:2] == (0, 0) and d.mean_iou == pytest.approx(90 / 110, abs=1e-4)
    assert d.mean_score_change == pytest.approx(-0.05, abs=1e-4) and d.agreement == pytest.approx(0.2)
    assert [b["label"] for b in d.missed_boxes] == ["b", "a"] and [b["label"] for b in d.extra_boxes] == ["c", "b"]
    # one-to-one: two FP32 boxes on one INT8 box match once
    d2, _ = compare(_det([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0]]), _det([[0, 0, 10, 10, 0.9, 0]]), [])
    assert (d2.matched, d2.missed, d2.extra) == (1, 1, 0)
    empty, _ = compare(_det([]), _det([]), [])
    assert empty.agreement == 1.0 and empty.mean_iou is None


@pytest.mark.paddle
def test_diff_on_embedded_model_writes_consistent_files(default_artifacts, tmp_path, capsys):
    out = tmp_path / "diff"
    rc = main(["diff", "--dataset", "default", "--limit", "8", "--backend", "ort", "--save-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "diff.json").read_text())
    images = data["images"]
    assert len(images) == 8 and data["int8_artifact"]["kind"] == "ort-qdq"
    for key in ("fp32", "int8", "matched", "missed", "extra"):
        assert data["summary"][key] == sum(d[key] for d in images)
    assert data["summary"]["matched"] > 0 and all(d["ground_truth"] is not None for d in images)
    for d in images:
        assert d["matched"] + d["missed"] == d["fp32"] and d["matched"] + d["extra"] == d["int8"]
        img = cv2.imread(d["png"])
        assert img is not None and img.shape[1] > 2 * 100
    assert cv2.imread(str(out / "montage.png")) is not None
    assert "all images" in capsys.readouterr().out


def test_diff_bad_input_is_one_line(tmp_path, capsys):
    assert main(["diff", "--save-dir", str(tmp_path / "d")]) == 2
    assert "give images or --dataset" in capsys.readouterr().err
    assert main(["diff", "--dataset", "default", "--model", "default", "--int8-model", "default",
                 "--save-dir", str(tmp_path / "d")]) == 2
    assert "not a quantized model" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
