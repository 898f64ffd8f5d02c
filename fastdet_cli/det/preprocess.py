"""Preprocessing built from the deploy config's `Preprocess` list, through an explicit op registry.

Semantics follow PaddleDetection's deploy/python/preprocess.py: the image is decoded BGR→RGB, ops run in
order on an HWC array (CHW after Permute), and `im_shape` / `scale_factor` ([scale_y, scale_x]) are tracked
for the model inputs of the same names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from fastdet_cli.errors import FastdetError


@dataclass
class ImageInfo:
    im_shape: np.ndarray  # [h, w] of the network input image (float32)
    scale_factor: np.ndarray  # [scale_y, scale_x] (float32)
    orig_shape: tuple[int, int]


OPS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        OPS[name] = cls
        return cls
    return deco


def _size_pair(value: Any, op: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise FastdetError(f"preprocess op {op}: target_size must be an int or [h, w], got {value!r}")


@register("Resize")
class Resize:
    def __init__(self, target_size, keep_ratio: bool = True, interp: int = 1):
        self.target = _size_pair(target_size, "Resize")
        self.keep_ratio, self.interp = bool(keep_ratio), int(interp)

    def __call__(self, im: np.ndarray, info: ImageInfo) -> np.ndarray:
        import cv2

        h, w = im.shape[:2]
        if self.keep_ratio:
            # PaddleDetection's rule: scale the short side to the short target unless the long side overflows
            t_min, t_max = min(self.target), max(self.target)
            scale = t_min / min(h, w)
            if round(scale * max(h, w)) > t_max:
                scale = t_max / max(h, w)
            sy = sx = scale
        else:
            sy, sx = self.target[0] / h, self.target[1] / w
        im = cv2.resize(im, None, None, fx=sx, fy=sy, interpolation=self.interp)
        info.im_shape = np.array(im.shape[:2], np.float32)
        info.scale_factor = np.array([sy, sx], np.float32)
        return im


@register("NormalizeImage")
class NormalizeImage:
    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), is_scale: bool = True,
                 norm_type: str = "mean_std"):
        if norm_type not in ("mean_std", "none"):
            raise FastdetError(f"preprocess op NormalizeImage: unknown norm_type {norm_type!r}")
        self.is_scale, self.norm_type = bool(is_scale), norm_type
        # fold scaling and mean/std into one multiply-add: (im * s - mean) / std == im * a + b
        s = 1.0 / 255.0 if self.is_scale else 1.0
        mean = np.asarray(mean, np.float32) if norm_type == "mean_std" else np.zeros(3, np.float32)
        std = np.asarray(std, np.float32) if norm_type == "mean_std" else np.ones(3, np.float32)
        self.a = (s / std).astype(np.float32)
        self.b = (-mean / std).astype(np.float32)

    def __call__(self, im: np.ndarray, info: ImageInfo) -> np.ndarray:
        out = im.astype(np.float32)
        if out.ndim == 3 and out.shape[2] == 3:
            # OpenCV's per-channel scalar ops: ~6× faster than NumPy broadcasting over a last axis of 3
            import cv2

            cv2.multiply(out, (*map(float, self.a), 0.0), dst=out)
            cv2.add(out, (*map(float, self.b), 0.0), dst=out)
            return out
        return out * self.a + self.b


@register("Permute")
class Permute:
    def __init__(self, **_ignored):
        pass

    def __call__(self, im: np.ndarray, info: ImageInfo) -> np.ndarray:
        return np.ascontiguousarray(im.transpose(2, 0, 1))


@register("PadStride")
class PadStride:
    def __init__(self, stride: int = 0):
        self.stride = int(stride)

    def __call__(self, im: np.ndarray, info: ImageInfo) -> np.ndarray:
        if self.stride <= 0:
            return im
        c, h, w = im.shape
        ph, pw = -(-h // self.stride) * self.stride, -(-w // self.stride) * self.stride
        out = np.zeros((c, ph, pw), np.float32)
        out[:, :h, :w] = im
        return out


@register("LetterBoxResize")
class LetterBoxResize:
    def __init__(self, target_size):
        self.target = _size_pair(target_size, "LetterBoxResize")

    def __call__(self, im: np.ndarray, info: ImageInfo) -> np.ndarray:
        import cv2

        height, width = self.target
        h, w = im.shape[:2]
        ratio = min(height / h, width / w)
        new_w, new_h = round(w * ratio), round(h * ratio)
        padw, padh = (width - new_w) / 2, (height - new_h) / 2
        top, bottom = round(padh - 0.1), round(padh + 0.1)
        left, right = round(padw - 0.1), round(padw + 0.1)
        im = cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_AREA)
        im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(127.5, 127.5, 127.5))
        info.im_shape = np.array([height, width], np.float32)
        info.scale_factor = np.array([ratio, ratio], np.float32)
        return im


@register("Pad")
class Pad:
    def __init__(self, size, fill_value=(114.0, 114.0, 114.0)):
        self.size = _size_pair(size, "Pad")
        self.fill = np.asarray(fill_value, np.float32)

    def __call__(self, im: np.ndarray, info: ImageInfo) -> np.ndarray:
        h, w = self.size
        ih, iw = im.shape[:2]
        if (ih, iw) == (h, w):
            return im.astype(np.float32)
        if ih > h or iw > w:
            raise FastdetError(f"preprocess op Pad: image {ih}x{iw} is larger than the pad size {h}x{w}")
        canvas = np.empty((h, w, 3), np.float32)
        canvas[:] = self.fill
        canvas[:ih, :iw] = im
        info.im_shape = np.array([h, w], np.float32)
        return canvas


class Preprocessor:
    """The deploy config's ops, built once; call on a BGR image to get the model's inputs."""

    def __init__(self, op_specs: list[dict[str, Any]], source: str = "deploy config"):
        self.ops = []
        for spec in op_specs:
            spec = dict(spec)
            name = spec.pop("type", None)
            if name not in OPS:
                raise FastdetError(f"{source}: unknown preprocess op {name!r} (supported: {', '.join(sorted(OPS))})")
            try:
                self.ops.append(OPS[name](**spec))
            except TypeError as e:
                raise FastdetError(f"{source}: bad parameters for preprocess op {name}: {e}") from e
        self.names = [type(op).__name__ for op in self.ops]

    @classmethod
    def of(cls, deploy) -> Preprocessor:
        """The preprocessing a model's deploy config (det.config.DeployConfig) describes."""
        return cls(deploy.preprocess, str(deploy.path))

    def __call__(self, bgr: np.ndarray) -> tuple[dict[str, np.ndarray], ImageInfo]:
        import cv2

        im = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = im.shape[:2]
        info = ImageInfo(np.array([h, w], np.float32), np.array([1.0, 1.0], np.float32), (h, w))
        for op in self.ops:
            im = op(im, info)
        if im.ndim != 3 or im.shape[0] != 3:
            raise FastdetError("preprocess did not produce a CHW image (is Permute missing from the deploy config?)")
        inputs = {
            "image": im[None].astype(np.float32, copy=False),
            "im_shape": info.im_shape[None],
            "scale_factor": info.scale_factor[None],
        }
        return inputs, info


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the image files in them (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR uint8; a clear error when it is not an image."""
    import cv2

    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    if data is None:
        raise FastdetError(f"image not found: {path}")
    im = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if im is None:
        raise FastdetError(f"not a readable image: {path}")
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-64:].tobytes():
        # libjpeg decodes what is there and fills the rest with grey: the boxes would be made up
        raise FastdetError(f"truncated JPEG (no end-of-image marker): {path}")
    return im
