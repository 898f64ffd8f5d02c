"""Agreement mAP: what INT8 changed when there are no labels.

Users who hold only a model rarely have an annotated dataset for its classes. mAP against ground truth is then
impossible, but "what did INT8 change?" is not: a reference model's detections (the FP32 model's, at its own
`draw_threshold`) on the same images serve as ground truth, and a model's COCO mAP against them is reported as
**agreement mAP** — never mixed with real mAP. The reference agrees with itself at 1.0 by construction (its boxes
are found exactly, with the highest scores), so an accuracy budget becomes 1.0 − agreement.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

from fastdet_cli.data.dataset import CocoDataset, ImageFolder, resolve_eval_data
from fastdet_cli.errors import FastdetError
from fastdet_cli.paths import cache_dir

if TYPE_CHECKING:
    from fastdet_cli.runtime.registry import BackendSpec

AGREEMENT_VERSION = 1


def reference_dataset(det, folder: ImageFolder, limit: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> CocoDataset:
    """A COCO dataset whose annotations are `det`'s detections (an active Detector: the reference) on the
    folder's images at its deploy config's draw_threshold; cached by reference, backend, threshold and images."""
    from fastdet_cli.det.preprocess import read_image
    from fastdet_cli.outputs import write_json_atomic

    files = folder.image_files(limit)
    if not files:
        raise FastdetError(f"no images in {folder.path}")
    thr = det.deploy.draw_threshold
    h = hashlib.sha256(f"{AGREEMENT_VERSION}|{det.source.content_hash()}|{det.backend}|{thr}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    ann = cache_dir() / "agreement" / f"{h.hexdigest()[:24]}.json"
    if not ann.exists():
        images, annotations = [], []
        for n, f in enumerate(files, 1):
            bgr = read_image(f)
            images.append({"id": n, "file_name": str(f.relative_to(folder.path)), "width": bgr.shape[1],
                           "height": bgr.shape[0]})
            found = det(bgr).above(thr)
            for b, c in zip(found.boxes, found.class_ids):
                x1, y1, x2, y2 = (float(v) for v in b)
                annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": int(c) + 1,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 0})
            if progress:
                progress(n, len(files))
        if not annotations:
            raise FastdetError(f"the reference model {det.source.path} finds nothing on the {len(files)} images of "
                               f"{folder.path} (score ≥ {thr:g}): there is no agreement to measure")
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(det.deploy.label_list)]
        write_json_atomic(ann, {"images": images, "annotations": annotations, "categories": categories,
                                "info": {"reference": str(det.source.path), "backend": det.backend,
                                         "score_threshold": thr}})
    return CocoDataset(ann, folder.path, reference=str(det.source.path))


def labelled(data_spec, reference, backend: BackendSpec, options=None, limit: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> CocoDataset:
    """`data_spec` as a dataset to measure mAP on: a COCO dataset as it is, or an image folder labelled by
    `reference` (a model spec or ModelSource) on `backend`."""
    data = resolve_eval_data(data_spec)
    if isinstance(data, CocoDataset):
        return data
    return with_reference(data, reference, backend, options, limit, progress)


def with_reference(data: CocoDataset | ImageFolder, reference, backend: BackendSpec, options=None,
                   limit: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> CocoDataset:
    """The images of `data` (its annotations ignored) labelled by `reference`'s detections on `backend`."""
    from fastdet_cli.artifacts import detector

    folder = data if isinstance(data, ImageFolder) else ImageFolder(data.image_dir)
    with detector(reference, backend, options) as ref:
        return reference_dataset(ref, folder, limit, progress)


def fp32_of(model: str | Path) -> str:
    """The FP32 model a compressed model was made from (its compress_report.json's model_fp32)."""
    import json

    from fastdet_cli.artifacts import forms
    from fastdet_cli.det.model import resolve_model

    # a multi-form compress output names its FP32 model at its top, as a single model does
    report = (Path(model) if forms(model) else resolve_model(model).dir) / "compress_report.json"
    if not report.is_file():
        raise FastdetError(f"--reference fp32: {model} has no compress_report.json saying which FP32 model it was "
                           "made from; give the FP32 model's path instead")
    return json.loads(report.read_text())["model_fp32"]


def metric_name(dataset: CocoDataset) -> str:
    return "agreement mAP" if dataset.reference else "mAP"

