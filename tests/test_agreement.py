"""agreement.py: a reference model's detections as ground truth. The embedded model on a few generated scenes
labels them; it agrees with itself at 1.0, other backends running it agree too, its INT8 version less; the
labels are cached by reference, backend, threshold and images."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from fastdet_cli.agreement import fp32_of, labelled, metric_name, with_reference
from fastdet_cli.artifacts import detector
from fastdet_cli.data.dataset import CocoDataset, ImageFolder
from fastdet_cli.errors import FastdetError
from fastdet_cli.evaluate.coco import coco_evaluate
from fastdet_cli.paths import DEFAULT_MODEL_DIR
from fastdet_cli.runtime.registry import BACKENDS

ORT = BACKENDS["ort"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four generated scenes (the embedded model's own kind of image) in a folder without annotations."""
    import cv2

    from fastdet_cli.data.synth import render_image

    folder = tmp_path_factory.mktemp("scenes")
    for seed in range(4):
        image, _ = render_image(np.random.default_rng([seed, 11]))
        cv2.imwrite(str(folder / f"scene{seed}.png"), image)
    return folder


@pytest.fixture(scope="module")
def reference(scenes):
    """The scenes labelled by the embedded model on ONNX Runtime, and the progress calls seen."""
    calls = []
    data = with_reference(ImageFolder(scenes), "default", ORT, progress=lambda n, total: calls.append((n, total)))
    return data, calls


def test_the_labels_are_the_reference_s_detections_above_its_threshold(scenes, reference):
    from fastdet_cli.det.preprocess import read_image

    data, calls = reference
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert data.image_dir == scenes and data.reference and metric_name(data) == "agreement mAP"
    coco = data.load()
    assert [c["name"] for c in coco["categories"]] == ["circle", "rectangle", "triangle", "cross", "ring"]
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5]
    assert coco["info"]["backend"] == "ort" and coco["info"]["score_threshold"] == 0.5
    by_image = {im["file_name"]: im for im in coco["images"]}
    assert sorted(by_image) == [f"scene{s}.png" for s in range(4)]
    with detector("default", ORT) as det:  # the same model, run again: its boxes are the annotations
        for name, im in by_image.items():
            bgr = read_image(scenes / name)
            assert (im["width"], im["height"]) == (bgr.shape[1], bgr.shape[0])
            found = det(bgr).above(0.5)
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            assert len(anns) == len(found) > 0, name
            for a, box, cls in zip(anns, found.boxes, found.class_ids):
                x1, y1, x2, y2 = box
                np.testing.assert_allclose(a["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-3)
                assert a["category_id"] == int(cls) + 1 and a["iscrowd"] == 0
                assert a["area"] == pytest.approx((x2 - x1) * (y2 - y1), rel=1e-4)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_the_reference_agrees_with_itself_at_one(reference):
    data, _ = reference
    with detector("default", ORT) as det:
        result = coco_evaluate(det, data)
    assert result.map == pytest.approx(1.0) and result.stats["AP50"] == pytest.approx(1.0)
    assert result.images == 4 and result.detections >= len(data.load()["annotations"])


@pytest.mark.parametrize("backend", [pytest.param("openvino", marks=pytest.mark.openvino),
                                     pytest.param("paddle", marks=pytest.mark.paddle)])
def test_the_same_model_on_another_backend_agrees(reference, backend):
    data, _ = reference
    with detector("default", BACKENDS[backend]) as det:
        assert coco_evaluate(det, data).map >= 0.95


@pytest.mark.paddle
def test_int8_agrees_less_than_the_reference_does_with_itself(reference, default_ptq_ort):
    data, _ = reference
    with detector(default_ptq_ort, ORT) as det:
        agreement = coco_evaluate(det, data).map
    assert 0.5 < agreement < 0.99  # INT8 moves boxes and scores: agreement measures it, without labels


def test_labels_are_cached_by_images_and_limit(scenes, reference, tmp_path):
    data, _ = reference
    stamp = data.ann_file.stat().st_mtime_ns
    again = with_reference(ImageFolder(scenes), "default", ORT)
    assert again.ann_file == data.ann_file and again.ann_file.stat().st_mtime_ns == stamp
    two = with_reference(ImageFolder(scenes), "default", ORT, limit=2)
    assert two.ann_file != data.ann_file
    assert [im["file_name"] for im in two.load()["images"]] == ["scene0.png", "scene1.png"]
    # an image changed since (a new mtime): labelled again
    copy = tmp_path / "copy"
    shutil.copytree(scenes, copy)
    first = with_reference(ImageFolder(copy), "default", ORT).ann_file
    st = (copy / "scene0.png").stat()
    os.utime(copy / "scene0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert with_reference(ImageFolder(copy), "default", ORT).ann_file != first


def test_a_coco_dataset_s_own_annotations_are_ignored(scenes, reference):
    data, _ = reference
    coco = CocoDataset(scenes / "no_such_annotations.json", scenes)
    relabelled = with_reference(coco, "default", ORT)
    assert relabelled.ann_file == data.ann_file and relabelled.reference


def test_labelled_keeps_a_coco_dataset_and_labels_a_folder(val_dataset, scenes, reference):
    assert labelled("default", "default", ORT) == val_dataset
    assert metric_name(val_dataset) == "mAP"
    assert labelled(str(scenes), "default", ORT).ann_file == reference[0].ann_file


def test_nothing_to_agree_on_is_one_clear_error(tmp_path, fastdet_cache):
    import cv2

    with pytest.raises(FastdetError, match=r"^no images in "):
        with_reference(ImageFolder(tmp_path), "default", ORT)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((192, 192, 3), 128, np.uint8))
    before = set((fastdet_cache / "agreement").glob("*.json"))
    with pytest.raises(FastdetError, match=r"finds nothing on the 1 images of .*there is no agreement to measure$"):
        with_reference(ImageFolder(tmp_path), "default", ORT)
    assert set((fastdet_cache / "agreement").glob("*.json")) == before  # no empty ground truth cached


def test_fp32_of_reads_the_compress_report(tmp_path):
    model = tmp_path / "int8"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    with pytest.raises(FastdetError, match=r"^--reference fp32: .*int8 has no compress_report.json"):
        fp32_of(model)
    (model / "compress_report.json").write_text(json.dumps({"model_fp32": "/models/picodet_fp32"}))
    assert fp32_of(model) == "/models/picodet_fp32"
