"""The calibration/training images: listed from what the config names, and preprocessed into the model's feeds
by its own deploy config (the code path `fastdet infer` uses)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastdet_cli.det.model import ModelSource
from fastdet_cli.errors import FastdetError


def image_list(spec: str, limit: int | None) -> list[Path]:
    """`default` → the generated calibration split (never the val split that mAP is measured on); a COCO dir →
    its images; a folder → the image files in it."""
    from fastdet_cli.det.preprocess import expand_inputs
    from fastdet_cli.data.dataset import default_dataset_dir, resolve_dataset

    if spec == "default":
        root = default_dataset_dir(("calib",))
        files = sorted((root / "calib").glob("*.jpg"))
    else:
        path = Path(spec)
        if not path.is_dir():
            raise FastdetError(f"calibration image folder not found: {path}")
        if (path / "annotations").is_dir():
            files = [p for _, p in resolve_dataset(path).image_paths()]
        else:
            files = expand_inputs([path])
    if not files:
        raise FastdetError(f"no images in {spec}")
    return files[:limit] if limit else files


class FeedSamples:
    """Images → the model's feed dicts (without the batch axis), through the deploy config's preprocessing:
    the same code path `fastdet infer` uses."""

    def __init__(self, source: ModelSource, files: list[Path], feed_names: list[str]):
        from fastdet_cli.det.preprocess import Preprocessor

        self.files, self.feed_names = files, feed_names
        self.pre = Preprocessor.of(source.deploy)
        self.pipeline = " → ".join(["Decode(BGR→RGB)"] + self.pre.names)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        from fastdet_cli.det.preprocess import read_image

        return self.feed(read_image(self.files[i]))

    def augmented(self, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Image `i` flipped, cropped or padded at random (qat_data.augment), then preprocessed."""
        from fastdet_cli.compress.qat_data import augment
        from fastdet_cli.det.preprocess import read_image

        return self.feed(augment(read_image(self.files[i]), rng))

    def feed(self, bgr: np.ndarray) -> dict[str, np.ndarray]:
        from fastdet_cli import interrupt

        interrupt.check()  # the calibration and training loops pull every batch through here
        feed, _ = self.pre(bgr)
        missing = [n for n in self.feed_names if n not in feed]
        if missing:
            raise FastdetError(f"the model takes {missing}, which preprocessing does not produce")
        return {n: feed[n][0] for n in self.feed_names}


def spread_feeds(samples, most: int) -> list[dict[str, np.ndarray]]:
    """Batch-1 feed dicts of at most `most` of `samples`, spread evenly over them (first and last included)."""
    picks = np.unique(np.linspace(0, len(samples) - 1, min(most, len(samples))).round().astype(int))
    return [{k: v[None] for k, v in samples[int(i)].items()} for i in picks]


def quarter_progress(log, what: str):
    """A `progress(done, total)` callback that logs `what` with done/total at each quarter of the way."""
    shown: set[int] = set()

    def progress(done: int, total: int) -> None:
        quarter = 4 * done // total
        if quarter not in shown:
            shown.add(quarter)
            log(f"  {what}: {done}/{total} depth steps")

    return progress
