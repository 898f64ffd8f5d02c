"""Deterministic generator of the embedded default detection dataset (COCO format).

Five shape classes on textured, noisy backgrounds, with varied size (small objects included), colour,
rotation, overlap and partial occlusion. Boxes are the *visible* extent of each object after the objects
painted later have covered it; objects left mostly hidden are dropped. The same (split, seed, count)
always gives byte-identical images and annotations, so a cached copy is keyed by GENERATOR_VERSION.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
CLASSES = ("circle", "rectangle", "triangle", "cross", "ring")
IMAGE_SIZE = 192
MIN_VISIBLE = 0.45  # an object whose visible fraction falls below this is removed from the image
SPLITS = {"train": (3000, 1000), "val": (200, 2000), "calib": (200, 3000)}  # split -> (images, seed)


@dataclass(frozen=True)
class Instance:
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h of the visible pixels
    area: float


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour noise, plus stripes or a checker pattern, plus pixel noise."""
    import cv2

    coarse = rng.uniform(40, 215, size=(rng.integers(2, 7), rng.integers(2, 7), 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 1:  # stripes at a random angle
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(6, 24)
        wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
        img += (wave * rng.uniform(8, 25))[..., None]
    elif kind == 2:  # checker
        cell = int(rng.integers(8, 28))
        checker = (((xx // cell) + (yy // cell)) % 2) * 2 - 1
        img += (checker * rng.uniform(8, 22))[..., None]
    img += rng.normal(0, rng.uniform(4, 14), size=img.shape).astype(np.float32)
    return img


def _shape_mask(rng: np.random.Generator, cls: str, cx: float, cy: float, s: float, size: int) -> np.ndarray:
    """A filled mask of one object of side about `s` centred at (cx, cy)."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel drawing precision
    k = 1 << shift

    def pts(points):
        return np.round(np.asarray(points) * k).astype(np.int32)

    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if cls == "circle":
        cv2.circle(mask, (int(cx * k), int(cy * k)), int(s / 2 * k), 1, -1, cv2.LINE_8, shift)
    elif cls == "ring":
        r = s / 2
        cv2.circle(mask, (int(cx * k), int(cy * k)), int(r * k), 1, -1, cv2.LINE_8, shift)
        cv2.circle(mask, (int(cx * k), int(cy * k)), int(r * rng.uniform(0.45, 0.65) * k), 0, -1, cv2.LINE_8, shift)
    elif cls == "rectangle":
        w, h = s, s * rng.uniform(0.45, 1.0)
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 @ rot.T + [cx, cy]
        cv2.fillPoly(mask, [pts(corners)], 1, cv2.LINE_8, shift)
    elif cls == "triangle":
        r = s / 2
        corners = np.array([[r * math.cos(a), r * math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
        cv2.fillPoly(mask, [pts(corners @ rot.T + [cx, cy])], 1, cv2.LINE_8, shift)
    elif cls == "cross":
        arm = s * rng.uniform(0.22, 0.34)
        for w, h in ((s, arm), (arm, s)):
            corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 @ rot.T + [cx, cy]
            cv2.fillPoly(mask, [pts(corners)], 1, cv2.LINE_8, shift)
    else:  # pragma: no cover - CLASSES is closed
        raise ValueError(cls)
    return mask.astype(bool)


def _colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A saturated colour kept apart from the local background (so the task is learnable but not trivial)."""
    for _ in range(20):
        c = rng.uniform(0, 255, size=3)
        c[rng.integers(0, 3)] = rng.choice([rng.uniform(0, 50), rng.uniform(205, 255)])
        if np.abs(c - background_mean).max() > 70:
            return c
    return 255 - background_mean


def render_image(rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[Instance]]:
    """One BGR uint8 image and its visible-box annotations."""
    img = _background(rng, size)
    owner = np.full((size, size), -1, np.int32)
    placed: list[tuple[int, np.ndarray]] = []
    n = int(rng.integers(1, 7))
    for _ in range(n):
        cls_idx = int(rng.integers(0, len(CLASSES)))
        # log-uniform side: many small and medium objects, some large ones
        s = float(math.exp(rng.uniform(math.log(14), math.log(size * 0.45))))
        cx, cy = rng.uniform(s * 0.3, size - s * 0.3, size=2)
        mask = _shape_mask(rng, CLASSES[cls_idx], cx, cy, s, size)
        if mask.sum() < 30:
            continue
        colour = _colour(rng, img[mask].mean(axis=0))
        # a soft linear shading across the object, so colour alone is not a constant
        ys, xs = np.nonzero(mask)
        gx, gy = rng.uniform(-0.25, 0.25, size=2)
        shade = 1 + (gx * (xs - cx) + gy * (ys - cy)) / s
        img[ys, xs] = colour[None, :] * shade[:, None]
        owner[mask] = len(placed)
        placed.append((cls_idx, mask))
    img += rng.normal(0, rng.uniform(2, 8), size=img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        import cv2

        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.0))
    instances = []
    for k, (cls_idx, mask) in enumerate(placed):
        visible = owner == k
        area = int(visible.sum())
        if area < MIN_VISIBLE * mask.sum() or area < 20:
            continue
        ys, xs = np.nonzero(visible)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        instances.append(Instance(cls_idx + 1, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)), float(area)))
    return img, instances


def sample_inputs(deploy, seed: int = 0) -> dict[str, np.ndarray]:
    """A real, deterministic input for validation: one generated scene through the model's own preprocessing
    (`deploy`: its det.config.DeployConfig)."""
    from fastdet_cli.det.preprocess import Preprocessor

    img, _ = render_image(np.random.default_rng([seed, 7]))
    feed, _ = Preprocessor.of(deploy)(img)
    return feed


def generate_split(out_dir: Path, split: str, count: int | None = None, seed: int | None = None) -> Path:
    """Write `out_dir/<split>/*.jpg` and `out_dir/annotations/instances_<split>.json`; return the json path."""
    import cv2

    default_count, default_seed = SPLITS[split]
    count = default_count if count is None else count
    seed = default_seed if seed is None else seed
    img_dir = out_dir / split
    img_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        img, inst = render_image(rng)
        name = f"{split}_{i:05d}.jpg"
        cv2.imwrite(str(img_dir / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": name, "width": img.shape[1], "height": img.shape[0]})
        for ins in inst:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": ins.category_id,
                                "bbox": list(ins.bbox), "area": ins.area, "iscrowd": 0})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    ann_path = out_dir / "annotations" / f"instances_{split}.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_path
