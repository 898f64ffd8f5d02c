"""The embedded default model ships in the package and meets the quality bar on its val split."""
import pytest
import yaml

from fastdet_cli.paths import DEFAULT_MODEL_DIR
from fastdet_cli.runtime.registry import BACKENDS


def test_default_model_ships_in_the_package():
    names = sorted(p.name for p in DEFAULT_MODEL_DIR.iterdir())
    assert names == ["infer_cfg.yml", "model.pdiparams", "model.pdmodel"]
    cfg = yaml.safe_load((DEFAULT_MODEL_DIR / "infer_cfg.yml").read_text())
    assert cfg["label_list"] == ["circle", "rectangle", "triangle", "cross", "ring"]
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size < 8e6  # a few MB of package data


@pytest.mark.paddle
def test_default_model_meets_the_bar_on_onnx_runtime(val_dataset):
    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate

    with detector("default", BACKENDS["ort"]) as det:
        res = coco_evaluate(det, val_dataset)
    assert res.stats["AP"] >= 0.50 and res.stats["AP50"] >= 0.80
    assert res.stats["AP"] < 0.97  # not saturated: a quantization loss must be visible
