"""COCO-format datasets: the generated default, or a user's folder (images + instances json)."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fastdet_cli.errors import FastdetError
from fastdet_cli.outputs import atomic_dir
from fastdet_cli.paths import cache_dir


def default_dataset_dir(splits: tuple[str, ...] = ("val",)) -> Path:
    """The generated default dataset in the cache, made (atomically) on first use."""
    from fastdet_cli.data import synth

    root = cache_dir() / "datasets" / f"default-v{synth.GENERATOR_VERSION}"
    for split in splits:
        if (root / "annotations" / f"instances_{split}.json").exists():
            continue
        merge = lambda tmp, _, s=split: _merge_split(tmp, root, s)  # noqa: E731
        with atomic_dir(root.with_name(f"{root.name}.{split}"), commit=merge) as tmp:
            synth.generate_split(tmp, split)
    return root


def _merge_split(tmp: Path, root: Path, split: str) -> None:
    """Move a generated split into the dataset root; the annotation file goes last: its presence marks the split
    complete."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / split, ignore_errors=True)
    (tmp / split).rename(root / split)
    (tmp / "annotations" / f"instances_{split}.json").rename(root / "annotations" / f"instances_{split}.json")


@dataclass(frozen=True)
class CocoDataset:
    """A COCO detection split: the annotation file and the folder of its images."""

    ann_file: Path
    image_dir: Path
    reference: str | None = None  # set when the "ground truth" is a reference model's detections (agreement)

    @property
    def label(self) -> str:
        """What to call it in messages and reports: the annotation file, or for a set labelled by a reference
        model (its annotations a cache file named by a hash) the image folder."""
        return str(self.image_dir if self.reference else self.ann_file)

    def load(self) -> dict:
        return json.loads(self.ann_file.read_text())

    def image_paths(self, limit: int | None = None) -> list[tuple[int, Path]]:
        images = sorted(self.load()["images"], key=lambda im: im["id"])[:limit]
        return [(im["id"], self.image_dir / im["file_name"]) for im in images]


def resolve_dataset(spec: str | Path | None) -> CocoDataset:
    """`default`/None → the generated val split (`default:calib`, `default:train`: another generated split);
    a folder → its annotations/instances_*.json and image folder
    (COCO layout: `annotations/instances_val2017.json` + `val2017/`); a json file → images beside it."""
    if spec is None or str(spec) == "default":
        root = default_dataset_dir(("val",))
        return CocoDataset(root / "annotations" / "instances_val.json", root / "val")
    if str(spec).startswith("default:"):
        from fastdet_cli.data.synth import SPLITS

        split = str(spec).split(":", 1)[1]
        if split not in SPLITS:
            raise FastdetError(f"unknown generated split '{split}' (known: {', '.join(SPLITS)})")
        root = default_dataset_dir((split,))
        return CocoDataset(root / "annotations" / f"instances_{split}.json", root / split)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".json":
        for cand in (path.parent.parent / path.stem.replace("instances_", ""), path.parent / "images", path.parent):
            if cand.is_dir():
                return CocoDataset(path, cand)
    if path.is_dir():
        anns = sorted((path / "annotations").glob("instances_*.json"))
        val = [a for a in anns if "val" in a.name] or anns
        if val:
            ann = val[0]
            split = ann.stem.replace("instances_", "")
            for cand in (path / split, path / "images", path):
                if cand.is_dir():
                    return CocoDataset(ann, cand)
    raise FastdetError(f"dataset not found or not in COCO layout: {spec} "
                       "(expected DIR/annotations/instances_<split>.json and DIR/<split>/)")


@dataclass(frozen=True)
class ImageFolder:
    """Images without annotations: no mAP against ground truth, but agreement with a reference model
    (agreement.py)."""

    path: Path

    def image_files(self, limit: int | None = None) -> list[Path]:
        from fastdet_cli.det.preprocess import IMAGE_SUFFIXES

        files = sorted(f for f in self.path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        return files[:limit] if limit else files


@dataclass(frozen=True)
class ImageList(ImageFolder):
    """Some images of one folder (e.g. QAT's held-back calibration images)."""

    files: tuple[Path, ...] = ()

    @classmethod
    def of(cls, files: list[Path]) -> ImageList:
        return cls(Path(files[0]).parent, tuple(sorted(files)))

    def image_files(self, limit: int | None = None) -> list[Path]:
        return list(self.files[:limit] if limit else self.files)


def resolve_eval_data(spec: str | Path | None) -> CocoDataset | ImageFolder:
    """A COCO dataset as `resolve_dataset` finds it, else a folder of images without annotations."""
    try:
        return resolve_dataset(spec)
    except FastdetError:
        path = Path(str(spec)).expanduser()
        if path.is_dir() and not (path / "annotations").exists():
            folder = ImageFolder(path)
            if folder.image_files(limit=1):
                return folder
            raise FastdetError(f"no images in {path} (and no annotations/instances_*.json)") from None
        raise
