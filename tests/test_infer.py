"""infer.py: `detect_images` on generated scenes with the embedded model — boxes above the threshold where the
scenes' objects are, an unreadable image recorded (not raised) while the others are detected, drawn images and
the JSON record written whole, and bad arguments refused before any work."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastdet_cli.data.synth import CLASSES
from fastdet_cli.errors import FastdetError
from fastdet_cli.infer import Box, ImageResult, check_threshold, detect_images
from fastdet_cli.runtime.registry import BACKENDS

ORT = BACKENDS["ort"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three generated scenes and their annotations: {file: [(class name, (x1, y1, x2, y2))]}."""
    import cv2

    from fastdet_cli.data.synth import render_image

    folder = tmp_path_factory.mktemp("scenes")
    truth = {}
    for seed in range(3):
        image, instances = render_image(np.random.default_rng([seed, 11]))
        path = folder / f"scene{seed}.png"
        cv2.imwrite(str(path), image)
        truth[path] = [(CLASSES[i.category_id - 1], (i.bbox[0], i.bbox[1], i.bbox[0] + i.bbox[2],
                                                      i.bbox[1] + i.bbox[3])) for i in instances]
    return folder, truth


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _quiet(notes):
    return notes.append


def test_boxes_above_the_threshold_where_the_objects_are(scenes):
    folder, truth = scenes
    notes, seen = [], []
    results = detect_images(sorted(truth), "default", ORT, log=_quiet(notes), on_image=seen.append)
    assert [r.image for r in results] == sorted(truth) and seen == results  # in order, each as soon as known
    found, total = 0, 0
    for r in results:
        assert r.error is None and (r.width, r.height) == (192, 192) and r.runtime_ms > 0
        assert r.threshold == 0.5 and r.boxes  # the deploy config's draw_threshold
        for b in r.boxes:
            assert b.score >= 0.5 and b.label == CLASSES[b.class_id]
            x1, y1, x2, y2 = b.bbox
            assert 0 <= x1 < x2 <= 192 and 0 <= y1 < y2 <= 192
        assert [b.score for b in r.boxes] == sorted((b.score for b in r.boxes), reverse=True)
        for name, gt in truth[r.image]:  # the embedded model finds the scenes' shapes, with their class
            total += 1
            found += any(b.label == name and _iou(b.bbox, gt) >= 0.5 for b in r.boxes)
    assert found >= total / 2, (found, total)
    assert any("embedded model is trained on generated shapes only" in n for n in notes)


def test_a_higher_threshold_keeps_a_subset(scenes):
    folder, _ = scenes
    low = detect_images([folder], "default", ORT, threshold=0.3, log=_quiet([]))
    high = detect_images([folder], "default", ORT, threshold=0.8, log=_quiet([]))
    assert [r.image.name for r in low] == ["scene0.png", "scene1.png", "scene2.png"]  # the folder, expanded
    assert sum(len(r.boxes) for r in high) < sum(len(r.boxes) for r in low)
    for lo, hi in zip(low, high):
        assert all(b.score >= 0.8 for b in hi.boxes) and set(hi.boxes) <= set(lo.boxes)


def test_a_threshold_below_the_nms_one_lowers_fastdet_s_nms(scenes):
    from fastdet_cli.artifacts import detector
    from fastdet_cli.infer import _lower_nms_threshold

    folder, _ = scenes
    notes = []
    detect_images([folder / "scene0.png"], "default", ORT, threshold=0.01, log=_quiet(notes))
    assert "note: NMS score threshold lowered from the model's 0.025 to 0.01" in notes
    with detector("default", ORT) as det:  # the NMS the host runs is the one lowered, and only ever lowered
        notes = []
        _lower_nms_threshold(det, 0.3, _quiet(notes))
        assert det.nms.score_threshold == pytest.approx(0.025) and notes == []
        _lower_nms_threshold(det, 0.01, _quiet(notes))
        assert det.nms.score_threshold == 0.01 and len(notes) == 1


@pytest.mark.paddle
def test_an_nms_inside_the_graph_cannot_be_lowered_and_a_note_says_so(scenes):
    folder, _ = scenes
    notes = []
    results = detect_images([folder / "scene0.png"], "default", BACKENDS["paddle"], threshold=0.01,
                            log=_quiet(notes))
    assert any(n.startswith("note: this model's in-graph NMS drops boxes below 0.025; --threshold 0.01 cannot")
               for n in notes)
    assert not any("lowered" in n for n in notes)
    assert results[0].boxes and min(b.score for b in results[0].boxes) >= 0.025


def test_an_unreadable_image_is_recorded_and_the_others_detected(scenes, tmp_path):
    folder, truth = scenes
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.png"
    images = [broken, sorted(truth)[0], missing]
    out = tmp_path / "out" / "detections.json"
    results = detect_images(images, "default", ORT, json_out=out, log=_quiet([]))
    assert [r.image for r in results] == images
    assert results[0].error == f"not a readable image: {broken}" and results[0].boxes == []
    assert results[2].error == f"image not found: {missing}"
    assert results[1].error is None and results[1].boxes
    record = json.loads(out.read_text())
    assert record["images"][0] == {"image": str(broken), "error": f"not a readable image: {broken}",
                                   "detections": []}
    assert record["images"][2]["error"].startswith("image not found")


def test_the_json_record_and_drawn_images(scenes, tmp_path):
    import cv2

    folder, truth = scenes
    out, drawn = tmp_path / "detections.json", tmp_path / "drawn"
    out.write_text("previous run")
    results = detect_images(sorted(truth), "default", ORT, threshold=0.4, save_dir=drawn, json_out=out,
                            log=_quiet([]))
    record = json.loads(out.read_text())
    assert record["model"] == "default" and record["backend"] == "ort" and record["threshold"] == 0.4
    assert record["images"] == json.loads(json.dumps([r.as_dict() for r in results]))
    first = record["images"][0]
    assert first["width"] == 192 and first["detections"][0] == {
        "class_id": results[0].boxes[0].class_id, "label": results[0].boxes[0].label,
        "score": results[0].boxes[0].score, "bbox": list(results[0].boxes[0].bbox)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.json", "drawn"]  # no temporary files left
    for path in truth:
        original, boxed = cv2.imread(str(path)), cv2.imread(str(drawn / path.name))
        assert boxed.shape == original.shape and (boxed != original).any()  # the boxes are drawn on a copy


def test_a_run_that_stops_midway_leaves_the_previous_record_whole(scenes, tmp_path):
    folder, truth = scenes
    out = tmp_path / "detections.json"
    out.write_text('{"images": []}')

    def stop(result):
        if result.image.name == "scene1.png":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        detect_images(sorted(truth), "default", ORT, json_out=out, log=_quiet([]), on_image=stop)
    assert out.read_text() == '{"images": []}' and [p.name for p in tmp_path.iterdir()] == ["detections.json"]


def test_bad_arguments_are_refused_before_any_work(scenes, tmp_path):
    folder, truth = scenes
    called = []
    with pytest.raises(FastdetError, match=r"^--threshold must be a score between 0 and 1, got 1.5$"):
        detect_images(sorted(truth), "default", ORT, threshold=1.5, on_image=called.append)
    with pytest.raises(FastdetError, match=r"^--json .* is a folder; give a file name$"):
        detect_images(sorted(truth), "default", ORT, json_out=tmp_path, save_dir=tmp_path / "drawn",
                      on_image=called.append)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FastdetError, match=r"^--save-dir .* is a file, not a folder$"):
        detect_images(sorted(truth), "default", ORT, save_dir=tmp_path / "file", on_image=called.append)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FastdetError, match=r"^no images given \(folders had no image files\)$"):
        detect_images([tmp_path / "empty"], "default", ORT, on_image=called.append)
    assert called == [] and not (tmp_path / "drawn").exists()


def test_check_threshold_bounds():
    for ok in (None, 0.0, 0.5, 1.0):
        check_threshold(ok)
    for bad in (-0.01, 1.01):
        with pytest.raises(FastdetError, match="--threshold must be a score between 0 and 1"):
            check_threshold(bad)


def test_image_result_records():
    box = Box(2, "triangle", 0.9, (1.0, 2.0, 30.0, 40.0))
    ok = ImageResult(image=Path("a.png"), threshold=0.5, boxes=[box], width=64, height=48)
    assert ok.as_dict() == {"image": "a.png", "width": 64, "height": 48, "detections": [
        {"class_id": 2, "label": "triangle", "score": 0.9, "bbox": (1.0, 2.0, 30.0, 40.0)}]}
    bad = ImageResult(image=ok.image, threshold=0.5, error="not a readable image: a.png")
    assert bad.as_dict() == {"image": "a.png", "error": "not a readable image: a.png", "detections": []}
