import cv2
import numpy as np
import pytest

from fastdet_cli.det.config import load_deploy_config
from fastdet_cli.det.preprocess import Preprocessor, read_image
from fastdet_cli.errors import FastdetError

NORM = {"type": "NormalizeImage", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "is_scale": True}


def _img(h=120, w=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resize_fixed_normalize_permute_matches_step_by_step_reference():
    bgr = _img()
    pre = Preprocessor([{"type": "Resize", "target_size": [64, 96], "keep_ratio": False, "interp": 2}, NORM,
                        {"type": "Permute"}])
    feed, info = pre(bgr)
    # reference, the way PaddleDetection's deploy/python/preprocess.py does it, op by op
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ref = cv2.resize(rgb, None, None, fx=96 / 200, fy=64 / 120, interpolation=2).astype(np.float32)
    ref /= 255.0
    ref -= np.array(NORM["mean"], np.float32)
    ref /= np.array(NORM["std"], np.float32)
    ref = ref.transpose(2, 0, 1)[None]
    assert feed["image"].shape == (1, 3, 64, 96)
    np.testing.assert_allclose(feed["image"], ref, atol=1e-5)
    np.testing.assert_allclose(feed["scale_factor"], [[64 / 120, 96 / 200]], rtol=1e-6)
    np.testing.assert_array_equal(feed["im_shape"], [[64, 96]])
    assert info.orig_shape == (120, 200)


def test_resize_keep_ratio_uses_paddledetection_rule():
    pre = Preprocessor([{"type": "Resize", "target_size": [320, 480], "keep_ratio": True}, {"type": "Permute"}])
    # short side 100 → 320 would make the long side 1280 > 480, so the long side decides: 480/400
    feed, _ = pre(_img(100, 400))
    assert feed["image"].shape[2:] == (120, 480)
    np.testing.assert_allclose(feed["scale_factor"], [[1.2, 1.2]])


def test_pad_stride_pads_to_multiple_with_zeros():
    pre = Preprocessor([{"type": "Resize", "target_size": 50, "keep_ratio": False}, NORM, {"type": "Permute"},
                        {"type": "PadStride", "stride": 32}])
    feed, _ = pre(_img())
    assert feed["image"].shape == (1, 3, 64, 64)
    assert np.all(feed["image"][0, :, 50:, :] == 0) and np.all(feed["image"][0, :, :, 50:] == 0)


def test_letterbox_keeps_ratio_and_centres():
    pre = Preprocessor([{"type": "LetterBoxResize", "target_size": [100, 100]}, {"type": "Permute"}])
    feed, _ = pre(np.zeros((50, 100, 3), np.uint8))
    assert feed["image"].shape == (1, 3, 100, 100)
    np.testing.assert_allclose(feed["scale_factor"], [[1.0, 1.0]])
    # grey padding (127.5 rounds to 128 on a uint8 image, as in PaddleDetection)
    assert feed["image"][0, 0, 10, 50] == 128 and feed["image"][0, 0, 50, 50] == 0


def test_unknown_op_is_named():
    with pytest.raises(FastdetError, match="unknown preprocess op 'Mosaic'"):
        Preprocessor([{"type": "Mosaic"}], "x.yml")


def test_bad_op_parameters_are_reported():
    with pytest.raises(FastdetError, match="bad parameters for preprocess op Resize"):
        Preprocessor([{"type": "Resize", "target_size": 32, "colour": 1}])


def test_read_image_errors(tmp_path):
    (tmp_path / "x.jpg").write_text("not an image")
    with pytest.raises(FastdetError, match="not a readable image"):
        read_image(tmp_path / "x.jpg")
    with pytest.raises(FastdetError, match="image not found"):
        read_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize("text,match", [
    ("Preprocess: [1, 2]\nlabel_list: [a]\n", "Preprocess"),
    ("Preprocess: []\n", "label_list"),
    ("a: [b\n", "cannot read deploy config"),
    ("- just a list\n", "not a mapping"),
])
def test_malformed_deploy_config(tmp_path, text, match):
    p = tmp_path / "infer_cfg.yml"
    p.write_text(text)
    with pytest.raises(FastdetError, match=match):
        load_deploy_config(p)


def test_deploy_yaml_name_accepted(tmp_path):
    (tmp_path / "deploy.yaml").write_text("arch: PicoDet\nPreprocess: [{type: Permute}]\nlabel_list: [a, b]\n"
                                          "NMS: {score_threshold: 0.3, nms_threshold: 0.5, keep_top_k: 10}\n")
    cfg = load_deploy_config(tmp_path)
    assert cfg.label_list == ["a", "b"] and cfg.nms.keep_top_k == 10 and cfg.nms.nms_top_k == 1000
