"""`fastdet infer`: detect objects in image files with the model's own preprocessing, on any backend; boxes drawn
into a folder and a JSON record of every image on request.

An image that cannot be read does not stop the run: its result carries the error (and it is recorded in the JSON
file), the other images are still detected."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:
    from fastdet_cli.runtime.registry import BackendSpec


@dataclass(frozen=True)
class Box:
    """One detection, in original-image pixels."""

    class_id: int
    label: str
    score: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass
class ImageResult:
    """The boxes of one image scoring at least `threshold`; `error` says why the image could not be read (it
    has no boxes then)."""

    image: Path
    threshold: float
    boxes: list[Box] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    runtime_ms: float | None = None  # the backend's inference alone (no pre- or post-processing)
    error: str | None = None

    def as_dict(self) -> dict:
        """The image's record in the JSON file (`fastdet infer --json`)."""
        if self.error is not None:
            return {"image": str(self.image), "error": self.error, "detections": []}
        return {"image": str(self.image), "width": self.width, "height": self.height,
                "detections": [dataclasses.asdict(b) for b in self.boxes]}


def check_threshold(threshold: float | None) -> None:
    """A score threshold is None (the deploy config's) or a score in [0, 1]."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise FastdetError(f"--threshold must be a score between 0 and 1, got {threshold:g}")


def detect_images(images: list[Path], model, spec: BackendSpec, options=None, threshold: float | None = None,
                  save_dir: Path | None = None, json_out: Path | None = None, log: Callable[[str], None] = print,
                  on_image: Callable[[ImageResult], None] | None = None) -> list[ImageResult]:
    """Detect objects in `images` (files; folders are expanded to their images) with `model` on `spec`'s backend.

    `threshold`: the score boxes must reach (default: the deploy config's draw_threshold). `save_dir`: write
    each image with its boxes drawn there. `json_out`: write every image's record to this file. `log` receives
    notes (lines starting "note: "); `on_image` each result as soon as it is known."""
    from fastdet_cli.artifacts import detector
    from fastdet_cli.det.preprocess import expand_inputs
    from fastdet_cli.outputs import check_output_dir, check_output_file, write_json_atomic

    check_threshold(threshold)
    check_output_file(json_out, "--json")
    check_output_dir(save_dir, "--save-dir")
    files = expand_inputs([Path(p) for p in images])
    if not files:
        raise FastdetError("no images given (folders had no image files)")
    results = []
    with detector(model, spec, options) as det:
        thr = det.deploy.draw_threshold if threshold is None else threshold
        _lower_nms_threshold(det, thr, log)
        if model == "default":
            log(f"note: the embedded model is trained on generated shapes only ({', '.join(det.deploy.label_list)}); "
                "on real photos its detections mean nothing — pass your own model with --model")
        for path in files:
            results.append(_detect_one(det, path, thr, save_dir))
            if on_image is not None:
                on_image(results[-1])
    for note in det.notes:
        log(f"note: {note}")
    if json_out is not None:
        write_json_atomic(json_out, {"model": model if model == "default" else str(det.source.path),
                                     "backend": det.backend, "threshold": thr,
                                     "images": [r.as_dict() for r in results]})
    return results


def _lower_nms_threshold(det, thr: float, log: Callable[[str], None]) -> None:
    """Keep what was asked for: fastdet's own NMS is lowered to `thr`; an NMS inside the graph cannot be (a note
    says so)."""
    in_graph = det.graph_nms_score_threshold()
    if in_graph is None and thr < det.nms.score_threshold:
        log(f"note: NMS score threshold lowered from the model's {det.nms.score_threshold:g} to {thr:g}")
        det.nms = dataclasses.replace(det.nms, score_threshold=thr)
    elif in_graph is not None and thr < in_graph:
        log(f"note: this model's in-graph NMS drops boxes below {in_graph:g}; --threshold {thr:g} cannot "
            "bring them back (export it with the NMS cut to lower it)")


def _detect_one(det, path: Path, thr: float, save_dir: Path | None) -> ImageResult:
    from fastdet_cli.det.draw import draw, records
    from fastdet_cli.det.preprocess import IMAGE_SUFFIXES, read_image
    from fastdet_cli.outputs import write_bytes_atomic

    try:
        bgr = read_image(path)
    except FastdetError as e:
        return ImageResult(path, thr, error=str(e))  # recorded, not dropped
    found = det(bgr).above(thr)
    labels = det.deploy.label_list
    boxes = [Box(r["class_id"], r["label"], r["score"], tuple(r["bbox"])) for r in records(found, labels)]
    if save_dir is not None:
        import cv2

        _, buf = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ".jpg",
                              draw(bgr, found, labels))
        write_bytes_atomic(Path(save_dir) / path.name, buf.tobytes())
    return ImageResult(path, thr, boxes, bgr.shape[1], bgr.shape[0], det.times.infer * 1000)
