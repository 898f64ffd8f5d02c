"""The generated default dataset: deterministic, valid COCO, and hard enough to be informative."""
import json

import numpy as np

from fastdet_cli.data import synth
from fastdet_cli.data.dataset import resolve_dataset


def test_same_seed_same_bytes(tmp_path):
    a = synth.generate_split(tmp_path / "a", "val", count=5)
    b = synth.generate_split(tmp_path / "b", "val", count=5)
    assert a.read_bytes() == b.read_bytes()
    for f in (tmp_path / "a" / "val").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / "val" / f.name).read_bytes()


def test_default_val_split_is_valid_coco_and_varied(val_dataset):
    data = json.loads(val_dataset.ann_file.read_text())
    assert len(data["images"]) == 200
    assert [c["name"] for c in data["categories"]] == list(synth.CLASSES)
    anns = data["annotations"]
    ids = {im["id"]: im for im in data["images"]}
    for a in anns:
        im = ids[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"] and w > 0 and h > 0
        assert a["iscrowd"] == 0 and 0 < a["area"] <= w * h
    per_class = np.bincount([a["category_id"] for a in anns], minlength=6)[1:]
    assert per_class.min() > 80  # every class well represented
    areas = np.array([a["area"] for a in anns])
    assert (areas < 32 ** 2).mean() > 0.3  # many COCO-"small" objects
    per_image = np.bincount([a["image_id"] for a in anns])
    assert per_image.max() >= 5  # crowded scenes exist


def test_occlusion_shrinks_boxes_to_visible_part():
    # find a generated scene where a later object covers part of an earlier one: the earlier object's
    # box must be its visible extent, so its area is less than its box
    for i in range(50):
        _, inst = synth.render_image(np.random.default_rng([1000, i]))
        if any(ins.area < 0.7 * ins.bbox[2] * ins.bbox[3] for ins in inst):
            return
    raise AssertionError("no occluded objects in 50 scenes")


def test_resolve_dataset_accepts_a_coco_folder(tmp_path):
    synth.generate_split(tmp_path, "val", count=3)
    ds = resolve_dataset(tmp_path)
    assert ds.ann_file.name == "instances_val.json" and ds.image_dir == tmp_path / "val"
    assert len(ds.image_paths()) == 3


def test_sample_inputs_are_a_generated_scene_through_the_models_preprocessing():
    from fastdet_cli.det.model import resolve_model

    deploy = resolve_model("default").deploy
    a, b, other = synth.sample_inputs(deploy), synth.sample_inputs(deploy), synth.sample_inputs(deploy, seed=1)
    assert a["image"].shape == (1, 3, 192, 192) and a["image"].dtype == np.float32
    assert all(np.array_equal(a[k], b[k]) for k in a)  # deterministic: exports are validated on it
    assert not np.array_equal(a["image"], other["image"])
