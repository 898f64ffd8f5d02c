"""COCO evaluation wiring: perfect detections give AP 1.0, shifted ones less; category mapping."""
import json

import numpy as np
import pytest

from fastdet_cli.det.postprocess import Detections
from fastdet_cli.errors import FastdetError
from fastdet_cli.evaluate.coco import category_mapping, coco_evaluate


class OracleDetector:
    """Returns the ground truth of the image it is given (looked up by pixel content), optionally shifted."""

    def __init__(self, dataset, shift=0.0):
        from fastdet_cli.det.config import DeployConfig
        from fastdet_cli.det.preprocess import read_image

        data = json.loads(dataset.ann_file.read_text())
        self.deploy = DeployConfig(dataset.ann_file, "oracle", [], [c["name"] for c in data["categories"]])
        self.by_key = {}
        for im in data["images"]:
            key = read_image(dataset.image_dir / im["file_name"]).tobytes()
            boxes = [(a["bbox"], a["category_id"]) for a in data["annotations"] if a["image_id"] == im["id"]]
            self.by_key[key] = boxes
        self.shift = shift

    def __call__(self, bgr):
        gt = self.by_key[bgr.tobytes()]
        if not gt:
            return Detections.empty()
        b = np.array([[x + self.shift, y, x + w + self.shift, y + h] for (x, y, w, h), _ in gt], np.float32)
        return Detections(b, np.ones(len(gt), np.float32), np.array([c - 1 for _, c in gt]))


def test_perfect_detections_score_one(val_dataset):
    res = coco_evaluate(OracleDetector(val_dataset), val_dataset, limit=40)
    assert res.stats["AP"] == pytest.approx(1.0) and res.stats["AP50"] == pytest.approx(1.0)
    assert set(res.per_class) == {"circle", "rectangle", "triangle", "cross", "ring"}


def test_shifted_detections_score_less(val_dataset):
    res = coco_evaluate(OracleDetector(val_dataset, shift=4.0), val_dataset, limit=40)
    assert 0.05 < res.stats["AP"] < 0.9


def test_category_mapping():
    cats = [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]
    assert category_mapping(["a", "b"], cats) == {0: 3, 1: 7}
    assert category_mapping(["x", "y"], cats) == {0: 3, 1: 7}
    with pytest.raises(FastdetError, match="classes"):
        category_mapping(["x"], cats)
