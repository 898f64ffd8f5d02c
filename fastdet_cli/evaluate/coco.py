"""COCO bbox evaluation of a Detector with faster-coco-eval (a real COCO evaluator, no pycocotools/paddle
import-order trap)."""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable


from fastdet_cli.data.dataset import CocoDataset
from fastdet_cli.errors import FastdetError

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


@dataclass
class EvalResult:
    stats: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    images: int = 0
    detections: int = 0

    @property
    def map(self) -> float:
        return self.stats["AP"]

    def as_dict(self) -> dict:
        return {"stats": self.stats, "per_class_ap": self.per_class, "images": self.images,
                "detections": self.detections}


def category_mapping(labels: list[str], categories: list[dict]) -> dict[int, int]:
    """Model class index → dataset category id: by name when every label is found, else by sorted id order."""
    by_name = {c["name"]: c["id"] for c in categories}
    if all(lbl in by_name for lbl in labels):
        return {i: by_name[lbl] for i, lbl in enumerate(labels)}
    ids = sorted(c["id"] for c in categories)
    if len(ids) != len(labels):
        raise FastdetError(f"the model has {len(labels)} classes, the dataset {len(ids)} categories, "
                           "and their names do not match")
    return dict(enumerate(ids))


def coco_evaluate(detector, dataset: CocoDataset, limit: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Run `detector` (a Detector, active) over the dataset's images and evaluate the boxes."""
    from faster_coco_eval import COCO, COCOeval_faster

    from fastdet_cli.det.preprocess import read_image

    gt = COCO(str(dataset.ann_file))
    mapping = category_mapping(detector.deploy.label_list, gt.loadCats(gt.getCatIds()))
    items = dataset.image_paths(limit)
    dets = []
    for n, (image_id, path) in enumerate(items):
        found = detector(read_image(path))
        for b, s, c in zip(found.boxes, found.scores, found.class_ids):
            if int(c) in mapping:
                x1, y1, x2, y2 = (float(v) for v in b)
                dets.append({"image_id": image_id, "category_id": mapping[int(c)],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
        if progress:
            progress(n + 1, len(items))
    if not dets:
        return EvalResult({k: 0.0 for k in STAT_NAMES}, {}, len(items), 0)
    dt = gt.loadRes(dets)
    ev = COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
    ev.params.imgIds = [i for i, _ in items]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    stats = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    # per-class AP@[.5:.95]: precision is [T, R, K, A, M]; area "all", maxDets 100
    precision = ev.eval["precision"]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[gt.loadCats([cat_id])[0]["name"]] = float(p.mean()) if p.size else float("nan")
    return EvalResult(stats, per_class, len(items), len(dets))
