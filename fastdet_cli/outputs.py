"""Outputs: written atomically (a temporary file beside the target, renamed into place when complete), paths
checked before any work, and the libraries' own output sent to a log file."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file; a filesystem error is one clear FastdetError."""
    from fastdet_cli.errors import FastdetError

    from fastdet_cli import interrupt

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with interrupt.temporary(tmp):
            tmp.write_bytes(data)
            interrupt.check()  # an interrupt that library code swallowed: nothing is put in place
            tmp.replace(path)
    except OSError as e:
        raise FastdetError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(OSError):  # e.g. its parent is a file: the error above is the one to show
            tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the complete folder `tmp` to `final`, replacing an existing `final` only at that moment."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path, commit=None):
    """Yield an empty temporary folder beside `final`. When the block completes, `commit(tmp, final)` puts it in
    place (default `replace_dir`: renamed to `final`, an existing `final` replaced at that moment); when the
    block raises (Ctrl-C included) the temporary folder is removed and `final` is untouched. The one way fastdet
    writes an output folder."""
    from fastdet_cli import interrupt

    final = Path(final).resolve()
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with interrupt.temporary(tmp):
            yield tmp
            interrupt.check()  # an interrupt that library code swallowed: nothing is put in place
            final.parent.mkdir(parents=True, exist_ok=True)
            (commit or replace_dir)(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of `path` must be a writable directory."""
    from fastdet_cli.errors import FastdetError

    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FastdetError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FastdetError(f"{what} {path}: {parent} is not writable")


def check_output_file(path: Path | None, what: str = "output file") -> None:
    """Before any work: `path` can be written (not a folder, its folder writable). None passes."""
    from fastdet_cli.errors import FastdetError

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise FastdetError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise FastdetError(f"{what} {path} is not writable")
    _writable_parent(path, what)


def check_output_dir(path: Path | None, what: str = "output folder") -> None:
    """Before any work: `path` is (or can be made) a writable folder. None passes."""
    from fastdet_cli.errors import FastdetError

    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FastdetError(f"{what} {path} is a file, not a folder")
    if path.exists():
        if not os.access(path, os.W_OK | os.X_OK):
            raise FastdetError(f"{what} {path} is not writable")
        return
    _writable_parent(path, what)


@contextlib.contextmanager
def library_output_to(path: Path):
    """Send file descriptors 1 and 2 (and Python's sys.stdout/stderr writes) to `path` for the duration: the
    libraries' chatter (PaddleSlim's logs and tqdm bars, glog, ONNX Runtime's prints) lands in a log file the
    command names (or os.devnull), and fastdet's own console (ui.make_console(own_fd=True)) stays readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no descriptors to redirect
        yield
        return
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
