"""`fastdet diff`: what INT8 changed, image by image.

The FP32 and the INT8 model run on the same images and backend; their detections above one score threshold are
matched one to one (same class, IoU ≥ 0.5, FP32 boxes in score order as COCO matches). Per image: matched boxes,
boxes only FP32 found (`missed` by INT8), boxes only INT8 found (`extra`), the mean IoU of the matches and the
mean score change (INT8 − FP32). Written: one side-by-side PNG per image (FP32 left, INT8 right; green = found by
both, red = FP32 only, orange = INT8 only, thin white = ground truth when a dataset is given), `diff.json`, and
`montage.png` of the images that agree least. Everything goes through a temporary folder renamed into place.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

import numpy as np

from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:
    from fastdet_cli.artifacts import Int8Artifact
    from fastdet_cli.runtime.registry import BackendSpec

MATCHED, MISSED, EXTRA, TRUTH = (60, 200, 60), (40, 40, 230), (0, 165, 255), (255, 255, 255)  # BGR
LEGEND = [("found by both", MATCHED), ("FP32 only (missed by INT8)", MISSED), ("INT8 only (extra)", EXTRA)]
MIN_PANEL_WIDTH = 480  # small images are enlarged so the titles and labels stay readable


@dataclass
class Counts:
    """Boxes FP32 and INT8 found, matched (same class, IoU ≥ iou_min), missed by INT8 and added by it."""

    fp32: int
    int8: int
    matched: int
    missed: int
    extra: int
    mean_iou: float | None
    mean_score_change: float | None  # INT8 − FP32 over the matches
    agreement: float  # matched / (matched + missed + extra); 1.0 when neither model found anything


@dataclass
class ImageDiff(Counts):
    image: str = ""
    ground_truth: int | None = None
    missed_boxes: list[dict] = field(default_factory=list)
    extra_boxes: list[dict] = field(default_factory=list)
    png: str | None = None


def compare(fp32, int8, labels: list[str], iou_min: float = 0.5, image: str = "") -> tuple[ImageDiff, object]:
    """The ImageDiff of two Detections of one image (and the Matching behind it)."""
    from fastdet_cli.det.draw import records
    from fastdet_cli.det.match import match

    m = match(fp32, int8, iou_min)
    ious = [iou for _, _, iou in m.pairs]
    changes = [float(int8.scores[j] - fp32.scores[i]) for i, j, _ in m.pairs]
    total = len(m.pairs) + len(m.missed) + len(m.extra)
    recs32, recs8 = records(fp32, labels), records(int8, labels)
    return ImageDiff(len(fp32), len(int8), len(m.pairs), len(m.missed), len(m.extra),
                     round(float(np.mean(ious)), 4) if ious else None,
                     round(float(np.mean(changes)), 4) if changes else None,
                     round(len(m.pairs) / total, 4) if total else 1.0, image=image,
                     missed_boxes=[recs32[i] for i in m.missed], extra_boxes=[recs8[j] for j in m.extra]), m


@dataclass
class DiffSummary(Counts):
    """Totals over all images; mean IoU and mean score change weighted by matches."""

    images: int = 0


def summarize(diffs: list[ImageDiff]) -> DiffSummary:
    """Totals over images; mean IoU and mean score change weighted by matches (equal to the per-image sums)."""
    matched = sum(d.matched for d in diffs)
    missed, extra = sum(d.missed for d in diffs), sum(d.extra for d in diffs)

    def weighted(attr):
        pairs = [(getattr(d, attr), d.matched) for d in diffs if getattr(d, attr) is not None]
        return round(sum(v * n for v, n in pairs) / matched, 4) if matched else None

    total = matched + missed + extra
    return DiffSummary(sum(d.fp32 for d in diffs), sum(d.int8 for d in diffs), matched, missed, extra,
                       weighted("mean_iou"), weighted("mean_score_change"),
                       round(matched / total, 4) if total else 1.0, images=len(diffs))


@dataclass
class DiffResult:
    """What `diff_models` compared and found; `as_dict()` is diff.json."""

    fp32_model: str
    int8_model: str
    int8_artifact: Int8Artifact
    backend: str
    threshold: float
    iou: float
    dataset: str | None  # the annotation file when the images came from a dataset (ground truth drawn)
    summary: DiffSummary
    worst: list[str]  # the least-agreeing images, least first
    skipped: list[dict]  # {"image", "error"} of images that could not be read
    images: list[ImageDiff]

    def as_dict(self) -> dict:
        return {"fp32_model": self.fp32_model, "int8_model": self.int8_model,
                "int8_artifact": self.int8_artifact.as_dict(), "backend": self.backend, "threshold": self.threshold,
                "iou": self.iou, "dataset": self.dataset,
                "summary": {"images": self.summary.images, **asdict(self.summary)}, "worst": self.worst,
                "skipped": self.skipped, "images": [{"image": d.image, **asdict(d)} for d in self.images]}


def worst(diffs: list[ImageDiff], n: int) -> list[ImageDiff]:
    """The `n` images that agree least (lowest agreement, then most disagreements)."""
    return sorted(diffs, key=lambda d: (d.agreement, -(d.missed + d.extra)))[:n]


def _panel(bgr: np.ndarray, det, keep: dict[int, tuple], labels: list[str], title: str, truth) -> np.ndarray:
    import cv2

    from fastdet_cli.det.draw import label

    out = bgr.copy()
    scale = max(0.35, min(out.shape[:2]) / 700)
    if truth is not None:
        for box in truth:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), TRUTH, 1)
    for i, colour in keep.items():
        x1, y1, x2, y2 = (int(round(v)) for v in det.boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, max(1, int(2 * scale) + (colour != MATCHED)))
        c = int(det.class_ids[i])
        label(out, f"{labels[c] if 0 <= c < len(labels) else c} {det.scores[i]:.2f}", x1, y1, colour, scale)
    bar = np.full((28, out.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, title, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (240, 240, 240), 1, cv2.LINE_AA)
    return np.vstack([bar, out])


def _boxes(n: int) -> str:
    return f"{n} box" if n == 1 else f"{n} boxes"


def side_by_side(bgr: np.ndarray, fp32, int8, matching, labels: list[str], d: ImageDiff, truth=None) -> np.ndarray:
    """FP32 | INT8 with matched boxes green, FP32-only red (left), INT8-only orange (right), and a legend."""
    import cv2

    from fastdet_cli.det.postprocess import Detections

    scale = max(1.0, MIN_PANEL_WIDTH / bgr.shape[1])
    if scale > 1.0:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        fp32, int8 = (Detections(d.boxes * scale, d.scores, d.class_ids) for d in (fp32, int8))
        truth = None if truth is None else [tuple(v * scale for v in box) for box in truth]
    left = _panel(bgr, fp32, {**{i: MATCHED for i, _, _ in matching.pairs}, **{i: MISSED for i in matching.missed}},
                  labels, f"FP32: {_boxes(d.fp32)}, {d.missed} missed by INT8", truth)
    right = _panel(bgr, int8, {**{j: MATCHED for _, j, _ in matching.pairs}, **{j: EXTRA for j in matching.extra}},
                   labels, f"INT8: {_boxes(d.int8)}, {d.matched} matched, {d.extra} extra", truth)
    gap = np.full((left.shape[0], 6, 3), 255, np.uint8)
    row = np.hstack([left, gap, right])
    items = LEGEND + ([("ground truth", TRUTH)] if truth is not None else [])
    foot = np.full((10 + 20 * ((len(items) + 1) // 2), row.shape[1], 3), 32, np.uint8)
    for i, (text, colour) in enumerate(items):  # two columns
        x, y = 8 + (i % 2) * (row.shape[1] // 2), 18 + 20 * (i // 2)
        cv2.rectangle(foot, (x, y - 10), (x + 14, y + 2), colour, -1)
        cv2.putText(foot, text, (x + 20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (240, 240, 240), 1, cv2.LINE_AA)
    return np.vstack([row, foot])


def montage(pngs: list[Path], width: int = 1200) -> np.ndarray | None:
    """The given side-by-side images stacked, each scaled to one width (the narrowest, at most `width`: never
    enlarged)."""
    import cv2

    images = [img for img in (cv2.imread(str(p)) for p in pngs) if img is not None]
    if not images:
        return None
    width = min(width, *(img.shape[1] for img in images))
    return np.vstack([cv2.resize(img, (width, int(round(img.shape[0] * width / img.shape[1]))),
                                 interpolation=cv2.INTER_AREA) for img in images])


def _ground_truth(dataset) -> dict[int, list]:
    by_image: dict[int, list] = {}
    for a in dataset.load().get("annotations", []):
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    return by_image


def check_inputs(images: list[Path] | None, dataset: str | None, threshold: float | None = None,
                 iou_min: float = 0.5, save_dir: Path | None = None) -> tuple[list[Path], object]:
    """Before any model work: the options are in range, `save_dir` can be written, and the images to compare are
    either files (folders expanded) or a dataset's (one of the two). Returns (files, dataset or None)."""
    from fastdet_cli.det.preprocess import expand_inputs
    from fastdet_cli.infer import check_threshold
    from fastdet_cli.outputs import check_output_dir

    check_threshold(threshold)
    if not 0.0 < iou_min <= 1.0:
        raise FastdetError(f"--iou must be in (0, 1], got {iou_min:g}")
    if bool(images) == bool(dataset):
        raise FastdetError("give images or --dataset (one of the two)")
    check_output_dir(save_dir, "--save-dir")
    if dataset:
        from fastdet_cli.data.dataset import resolve_dataset

        return [], resolve_dataset(dataset)
    files = expand_inputs([Path(p) for p in images])
    if not files:
        raise FastdetError("no images given (folders had no image files)")
    return files, None


def diff_models(fp32_model, int8_model, spec: BackendSpec, images: list[Path], save_dir: Path, dataset=None,
                limit: int | None = None, threshold: float | None = None, iou_min: float = 0.5, options=None,
                keep_images: int | None = None, montage_size: int = 6,
                progress: Callable[[int, int], None] | None = None,
                log: Callable[[str], None] = print) -> DiffResult:
    """Run both models over `images` (or the dataset's, with its ground truth) and write the diff to `save_dir`
    (see the module doc). `int8_model`: a path, an Int8Artifact, or None for the embedded model's (see
    `artifacts.int8_for`). `keep_images`: write only the side-by-side PNGs of that many worst images."""
    import cv2

    from fastdet_cli.artifacts import best_fp32, detector
    from fastdet_cli.compress.defaults import int8_for
    from fastdet_cli.det.model import ModelSource, resolve_model
    from fastdet_cli.outputs import atomic_dir, write_bytes_atomic, write_json_atomic

    int8_art = int8_for(spec, int8_model, fp32_model, log)
    if int8_art.warning:
        log(int8_art.warning)
    fp32 = resolve_model(fp32_model) if not isinstance(fp32_model, ModelSource) else fp32_model
    # as bench's FP32 row: NMS on the host (as the INT8 model runs), in the fastest graph fastdet makes of it
    fp32 = best_fp32(fp32, spec, options.threads if options else 1).model
    truth_by_id, entries = {}, [(None, Path(p)) for p in images]
    if dataset is not None:
        truth_by_id = _ground_truth(dataset)
        entries = dataset.image_paths(limit)
    entries = entries[:limit] if limit else entries
    if not entries:
        raise FastdetError("no images to compare")
    with detector(fp32, spec, options) as det32, detector(int8_art.path, spec, options) as det8, \
            atomic_dir(save_dir) as tmp:
        thr = det32.deploy.draw_threshold if threshold is None else threshold
        (tmp / "images").mkdir()
        diffs, skipped = _compare_images(det32, det8, entries, thr, iou_min,
                                         truth_by_id if dataset is not None else None,
                                         tmp / "images", Path(save_dir).resolve() / "images", progress, log)
        bad = worst(diffs, montage_size)
        if keep_images is not None:  # only the worst few, e.g. beside a bench report
            kept = {d.png for d in worst(diffs, keep_images)}
            for d in diffs:
                if d.png not in kept:
                    (tmp / "images" / Path(d.png).name).unlink()
                    d.png = None
        tiles = montage([tmp / "images" / Path(d.png).name for d in bad if d.png])
        if tiles is not None:
            ok, buf = cv2.imencode(".png", tiles)
            write_bytes_atomic(tmp / "montage.png", buf.tobytes())
        result = DiffResult(str(det32.source.path), str(det8.source.path), int8_art, det32.backend, thr, iou_min,
                            str(dataset.ann_file) if dataset is not None else None, summarize(diffs),
                            [d.image for d in bad], skipped, diffs)
        write_json_atomic(tmp / "diff.json", result.as_dict())
    return result


def _compare_images(det32, det8, entries: list[tuple], thr: float, iou_min: float, truth_by_id: dict | None,
                    png_dir: Path, final_png_dir: Path, progress, log) -> tuple[list[ImageDiff], list[dict]]:
    """Both detectors on every image: the ImageDiffs (side-by-side PNGs written to `png_dir`, named as they
    will be found in `final_png_dir`) and the images that could not be read."""
    import cv2

    from fastdet_cli.det.preprocess import read_image

    labels = det32.deploy.label_list
    diffs: list[ImageDiff] = []
    skipped = []
    for n, (image_id, path) in enumerate(entries, 1):
        try:
            bgr = read_image(path)
        except FastdetError as e:
            skipped.append({"image": str(path), "error": str(e)})
            log(f"skipped: {e}")
            continue
        a, b = det32(bgr).above(thr), det8(bgr).above(thr)
        d, m = compare(a, b, labels, iou_min, str(path))
        truth = truth_by_id.get(image_id, []) if truth_by_id is not None else None
        d.ground_truth = None if truth is None else len(truth)
        png = png_dir / f"{n:05d}_{path.stem}.png"
        ok, buf = cv2.imencode(".png", side_by_side(bgr, a, b, m, labels, d, truth))
        png.write_bytes(buf.tobytes())
        d.png = str(final_png_dir / png.name)
        diffs.append(d)
        if progress:
            progress(n, len(entries))
    if not diffs:
        raise FastdetError("none of the images could be read")
    return diffs, skipped

