"""What QAT trains on and when it stops: the user's unlabeled calibration images, lightly augmented, minus a
held-back slice on which the student's agreement with the FP32 model decides which weights are kept and when
training stops (never the eval or held-out images: those only measure the result).

Distillation needs no labels (the teacher labels every augmented image itself), so any transform that keeps images
in the model's domain is fair: a horizontal flip, and a zoom in (a crop of 80–100% of each side) or out (the image
on a canvas up to 1.25× its size, filled with the median of its border): 20–200 images are then enough.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

HOLDOUT_SHARE, HOLDOUT_MIN, HOLDOUT_MAX = 0.2, 2, 20
MIN_TRAIN = 4  # fewer training images than this: no slice is held back (and nothing stops training early)
ZOOM = (0.8, 1.25)


def split_holdout(files: list[Path], seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(training images, held-back slice): the slice is 20% of the images (2 to 20), drawn with a fixed seed so
    every rank of a distributed run draws the same."""
    n = len(files)
    k = min(HOLDOUT_MAX, max(HOLDOUT_MIN, round(n * HOLDOUT_SHARE)))
    if n - k < MIN_TRAIN:
        return list(files), []
    held = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


def augment(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A horizontal flip (p = 0.5) and a zoom in or out, as the module's docstring says."""
    if rng.random() < 0.5:
        bgr = bgr[:, ::-1]
    h, w = bgr.shape[:2]
    s = float(rng.uniform(*ZOOM))
    if s < 1:
        ch, cw = max(1, int(h * s)), max(1, int(w * s))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        bgr = bgr[y:y + ch, x:x + cw]
    elif s > 1:
        big = np.empty((int(h * s), int(w * s), bgr.shape[2]), bgr.dtype)
        border = np.concatenate([bgr[0], bgr[-1], bgr[:, 0], bgr[:, -1]])
        big[:] = np.median(border, axis=0).astype(bgr.dtype)
        y, x = int(rng.integers(0, big.shape[0] - h + 1)), int(rng.integers(0, big.shape[1] - w + 1))
        big[y:y + h, x:x + w] = bgr
        bgr = big
    return np.ascontiguousarray(bgr)


class TrainBatches:
    """ACT's train loader: called once per epoch, it yields feed dicts of `batch_size` images in a new order each
    epoch (augmented when `augmentation`); after `stop()` it yields nothing, which ends ACT's training.
    The `before_step` functions run, in order, between steps (ACT asks for the next batch after the previous step
    has run)."""

    def __init__(self, samples, batch_size: int, augmentation: bool = True, seed: int = 0,
                 before_step: list[Callable] = ()):
        self.samples, self.batch_size, self.augmentation = samples, batch_size, augmentation
        self.seed, self.before_step = seed, list(before_step)
        self.epoch, self.stopped = 0, False

    def stop(self) -> None:
        self.stopped = True

    def __call__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.samples))
        for i in range(0, len(order) - self.batch_size + 1, self.batch_size):
            if self.stopped:
                return
            items = [self.samples.augmented(int(j), rng) if self.augmentation else self.samples[int(j)]
                     for j in order[i:i + self.batch_size]]
            for hook in self.before_step:
                hook()
            yield {k: np.stack([it[k] for it in items]) for k in self.samples.feed_names}


class EarlyStop:
    """ACT's eval callback: `metric(exe, program, feed_names, fetch_list)` (agreement mAP on the held-back slice),
    logged with the latest distillation loss; after `patience` evaluations without a better agreement, `stop()`
    (the train loader's). ACT itself keeps the weights of the best evaluation."""

    def __init__(self, metric: Callable, patience: int, stop: Callable, every: int, losses, log=print):
        self.metric, self.patience, self.stop, self.every = metric, patience, stop, every
        self.losses, self.log = losses, log
        self.history: list[dict] = []  # compress_report.json → config_resolved.agreement_log

    def best(self) -> dict | None:
        return max(self.history, key=lambda h: h["agreement"], default=None)

    def __call__(self, exe, program, feed_names, fetch_list) -> float:
        value = float(self.metric(exe, program, feed_names, fetch_list))
        it = (len(self.history) + 1) * self.every
        loss = self.losses.values[-1][1] if self.losses.values else None
        self.history.append({"iteration": it, "agreement": round(value, 4), "loss": loss})
        best = self.best()
        shown = "none" if loss is None else f"{loss:.4g}"
        self.log(f"QAT iteration {it}: distillation loss {shown}, agreement with FP32 on the held-back images "
                 f"{self.history[-1]['agreement']:.3f} (best {best['agreement']:.3f} at iteration {best['iteration']})")
        if it - best["iteration"] >= self.patience * self.every:
            self.log(f"QAT stops: no better agreement in {self.patience} evaluations")
            self.stop()
        return value
