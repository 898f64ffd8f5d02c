"""Download and unpack real models and datasets: resumable, checksummed, safely extracted, atomically placed.

The table below is the one list of what `fastdet fetch` knows; add PaddleDetection exports here.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from collections.abc import Callable

from fastdet_cli.errors import FastdetError
from fastdet_cli.outputs import atomic_dir
from fastdet_cli.paths import cache_dir


@dataclass(frozen=True)
class Part:
    url: str
    sha256: str | None = None  # checked when known
    subdir: str = ""  # where inside the entry's folder the archive is unpacked


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "model" or "dataset"
    description: str
    parts: tuple[Part, ...]


FASTDEPLOY = "https://bj.bcebos.com/paddlehub/fastdeploy"
ENTRIES: dict[str, Entry] = {e.name: e for e in (
    Entry("ppyoloe_crn_l_300e_coco", "model", "PP-YOLOE-l, 640x640, COCO, FP32 (the reference deployment's model)",
          (Part(f"{FASTDEPLOY}/ppyoloe_crn_l_300e_coco.tgz"),)),
    Entry("ppyoloe_crn_l_300e_coco_qat", "model", "PP-YOLOE-l, 640x640, COCO, INT8 from ACT QAT (the reference's)",
          (Part(f"{FASTDEPLOY}/ppyoloe_crn_l_300e_coco_qat.tar"),)),
    Entry("coco_val2017", "dataset", "COCO val2017: 5000 images + instances_val2017.json (~1 GB)",
          (Part("http://images.cocodataset.org/zips/val2017.zip"),
           Part("http://images.cocodataset.org/annotations/annotations_trainval2017.zip"))),
)}


def target_dir(name: str) -> Path:
    return cache_dir() / "fetched" / name


def _content_root(folder: Path) -> Path:
    """An archive holding one top folder (as PaddleDetection's do) is entered."""
    children = [c for c in folder.iterdir() if not c.name.startswith(".")]
    return children[0] if len(children) == 1 and children[0].is_dir() else folder


def download(url: str, dest: Path, progress: Callable[[int, int | None], None] | None = None,
             timeout: float = 30.0) -> Path:
    """Download `url` to `dest`, resuming from `dest.part` when the server honours ranges; a transfer cut
    short leaves the `.part` file for the next try and raises."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "fastdet-fetch"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch, or a stale part: start clean next time
            part.unlink()
            raise FastdetError(f"download of {url} could not resume (HTTP 416); the partial file was removed, "
                               "run the command again") from e
        raise FastdetError(f"cannot download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FastdetError(f"cannot download {url}: {reason} (is there a network connection?)") from e
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the range: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        got = have
        with part.open("ab" if have else "wb") as f:
            try:
                while chunk := resp.read(1 << 16):
                    f.write(chunk)
                    got += len(chunk)
                    if progress:
                        progress(got, total)
            except (OSError, urllib.error.URLError) as e:
                raise FastdetError(f"download of {url} was interrupted after {got} bytes ({e}); "
                                   "run the command again to resume") from e
    if total is not None and got < total:
        raise FastdetError(f"download of {url} was interrupted after {got} of {total} bytes; "
                           "run the command again to resume")
    part.replace(dest)
    return dest


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if not name or p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise FastdetError(f"unsafe path {name!r} in {archive.name}: refusing to extract")
    return p


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar or zip archive into `dest`, refusing members that would land outside it: absolute
    paths, `..`, links (symbolic or hard) pointing out, device files."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _safe_member_path(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise FastdetError(f"symbolic link {info.filename!r} in {archive.name}: refusing to extract")
            zf.extractall(dest)
        return
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as e:
        raise FastdetError(f"{archive.name} is not a tar or zip archive ({e})") from e
    with tf:
        members = tf.getmembers()
        for m in members:
            p = _safe_member_path(m.name, archive)
            if m.issym() or m.islnk():
                target = PurePosixPath(m.linkname)
                resolved = (p.parent / target) if m.issym() else target
                if target.is_absolute() or ".." in PurePosixPath(os.path.normpath(str(resolved))).parts:
                    raise FastdetError(f"link {m.name!r} -> {m.linkname!r} in {archive.name} points outside: "
                                       "refusing to extract")
            elif not (m.isfile() or m.isdir()):
                raise FastdetError(f"special file {m.name!r} in {archive.name}: refusing to extract")
        if hasattr(tarfile, "data_filter"):  # Python's own checks as a second layer
            tf.extractall(dest, members=members, filter="data")
        else:
            tf.extractall(dest, members=members)


def fetch(entry: Entry, progress: Callable[[str, int, int | None], None] | None = None,
          force: bool = False) -> Path:
    """Download every part, check, extract into a temporary folder, rename into the cache; return the folder
    to pass to --model / --dataset."""
    final = target_dir(entry.name)
    if final.exists() and not force:
        return _content_root(final)
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        for part in entry.parts:
            fname = PurePosixPath(urllib.request.urlparse(part.url).path).name or entry.name
            archive = downloads / fname
            if not archive.exists():
                download(part.url, archive, (lambda got, total, f=fname: progress(f, got, total)) if progress else None)
            if part.sha256 and sha256_of(archive) != part.sha256:
                archive.unlink()
                raise FastdetError(f"checksum mismatch for {fname}: the file was removed, run the command again")
            safe_extract(archive, tmp / part.subdir)
    return _content_root(final)
