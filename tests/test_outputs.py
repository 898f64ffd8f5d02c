"""outputs.py: atomic files and folders (complete or absent, never half-written, nothing left beside them) and
the path checks made before any work (one FastdetError line each)."""
from __future__ import annotations

import json
import os
import signal

import pytest

from fastdet_cli import interrupt
from fastdet_cli.errors import FastdetError
from fastdet_cli.outputs import (atomic_dir, check_output_dir, check_output_file, replace_dir, write_bytes_atomic,
                                 write_json_atomic)

not_root = pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: permissions are not checked")


def _leftovers(folder):
    """Hidden temporary or old copies fastdet leaves beside its outputs."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# --- single files ---

def test_write_bytes_atomic_writes_the_file_and_its_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    write_bytes_atomic(target, b"\x00\x01payload")
    assert target.read_bytes() == b"\x00\x01payload"
    write_bytes_atomic(target, b"second")  # an existing file is replaced whole
    assert target.read_bytes() == b"second"
    assert _leftovers(target.parent) == []


def test_write_json_atomic_round_trips_with_a_final_newline(tmp_path):
    target = tmp_path / "report.json"
    obj = {"rows": [{"backend": "ort", "map": 0.5}], "status": None}
    write_json_atomic(target, obj)
    text = target.read_text()
    assert json.loads(text) == obj and text.endswith("}\n") and "\n  " in text  # indented for people


def test_write_over_a_folder_is_one_clear_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(FastdetError, match=r"^cannot write .*taken: ") as e:
        write_bytes_atomic(target, b"data")
    _one_line(e)
    assert list(target.iterdir()) == [target / "inside"]  # the folder is as it was
    assert _leftovers(tmp_path) == []  # the temporary file was removed


def test_write_under_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FastdetError, match="cannot write") as e:
        write_bytes_atomic(tmp_path / "file" / "out.json", b"{}")
    _one_line(e)
    assert (tmp_path / "file").read_text() == "x"


def test_write_after_an_interrupt_puts_nothing_in_place(tmp_path, monkeypatch):
    # a Ctrl-C that library code swallowed: the write must not complete
    target = tmp_path / "out.json"
    target.write_text("old")
    monkeypatch.setattr(interrupt, "_received", [signal.SIGINT])
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(target, b"new")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


# --- folders ---

def test_atomic_dir_puts_the_complete_folder_in_place(tmp_path):
    final = tmp_path / "export"
    final.mkdir()
    (final / "stale.txt").write_text("from the last run")
    with atomic_dir(final) as tmp:
        assert tmp != final and tmp.parent == final.resolve().parent and list(tmp.iterdir()) == []
        (tmp / "model.onnx").write_bytes(b"model")
        assert (final / "stale.txt").exists()  # the old output stays until the new one is complete
    assert sorted(p.name for p in final.iterdir()) == ["model.onnx"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_atomic_dir_leaves_no_partial_output_when_the_writer_raises(tmp_path, error):
    final = tmp_path / "export"
    final.mkdir()
    (final / "model.onnx").write_bytes(b"previous")
    with pytest.raises(type(error)):
        with atomic_dir(final) as tmp:
            (tmp / "model.onnx").write_bytes(b"half")
            raise error
    assert (final / "model.onnx").read_bytes() == b"previous"  # untouched
    assert _leftovers(tmp_path) == []
    new = tmp_path / "fresh"
    with pytest.raises(type(error)):
        with atomic_dir(new) as tmp:
            (tmp / "part").write_text("x")
            raise error
    assert not new.exists()


def test_atomic_dir_after_an_interrupt_puts_nothing_in_place(tmp_path, monkeypatch):
    final = tmp_path / "out"
    monkeypatch.setattr(interrupt, "_received", [signal.SIGTERM])
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "model.onnx").write_bytes(b"complete, but interrupted")
    assert not final.exists() and _leftovers(tmp_path) == []


def test_atomic_dir_custom_commit_receives_the_complete_folder(tmp_path):
    seen = []

    def commit(tmp, final):
        seen.append((sorted(p.name for p in tmp.iterdir()), final))
        (final.parent / "merged.txt").write_text((tmp / "a.txt").read_text())

    with atomic_dir(tmp_path / "target", commit=commit) as tmp:
        (tmp / "a.txt").write_text("A")
    assert seen == [(["a.txt"], (tmp_path / "target").resolve())]
    assert (tmp_path / "merged.txt").read_text() == "A"
    assert not (tmp_path / "target").exists() and _leftovers(tmp_path) == []  # the commit chose not to rename


def test_replace_dir_swaps_in_the_new_folder(tmp_path):
    final, tmp = tmp_path / "final", tmp_path / ".final.tmp"
    final.mkdir()
    (final / "old").write_text("old")
    tmp.mkdir()
    (tmp / "new").write_text("new")
    replace_dir(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new"] and not tmp.exists()
    assert _leftovers(tmp_path) == []


# --- checks before any work ---

def test_check_output_file_accepts_new_and_existing_files_and_none(tmp_path):
    check_output_file(None)
    check_output_file(tmp_path / "new.json")
    check_output_file(tmp_path / "not" / "yet" / "made.json")  # its folders are made when it is written
    (tmp_path / "exists.json").write_text("{}")
    check_output_file(tmp_path / "exists.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.json"]  # a check creates nothing


def test_check_output_file_refuses_a_folder(tmp_path):
    with pytest.raises(FastdetError, match=r"^--json .* is a folder; give a file name$") as e:
        check_output_file(tmp_path, "--json")
    _one_line(e)


def test_check_output_file_refuses_a_path_under_a_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(FastdetError, match=r"is a file, not a folder") as e:
        check_output_file(tmp_path / "plain" / "deeper" / "out.json", "--json")
    assert _one_line(e).startswith("--json ")


def test_check_output_dir_accepts_new_and_existing_folders_and_none(tmp_path):
    check_output_dir(None)
    check_output_dir(tmp_path)
    check_output_dir(tmp_path / "new" / "nested")
    assert list(tmp_path.iterdir()) == []  # nothing made by the check


def test_check_output_dir_refuses_a_file_and_a_path_under_a_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(FastdetError, match=r"^--save-dir .*plain is a file, not a folder$") as e:
        check_output_dir(tmp_path / "plain", "--save-dir")
    _one_line(e)
    with pytest.raises(FastdetError, match=r"plain is a file, not a folder") as e:
        check_output_dir(tmp_path / "plain" / "sub")
    assert _one_line(e).startswith("output folder ")


@not_root
def test_checks_refuse_unwritable_places(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file.json").write_text("{}")
    locked.chmod(0o500)
    try:
        with pytest.raises(FastdetError, match="is not writable"):
            check_output_dir(locked)
        with pytest.raises(FastdetError, match="is not writable"):
            check_output_dir(locked / "sub")
        with pytest.raises(FastdetError, match="is not writable"):
            check_output_file(locked / "new.json")
        (locked / "file.json").chmod(0o400)
        with pytest.raises(FastdetError, match="is not writable"):
            check_output_file(locked / "file.json")
    finally:
        locked.chmod(0o700)
