"""The Python API: docs/api.md's session runs as written, the functions return their types, bad input is a
FastdetError before any model work, and importing the API stays light."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastdet_cli import api
from fastdet_cli.errors import FastdetError

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _blocks(info: str) -> list[str]:
    """The code blocks of docs/api.md whose fence reads exactly ```<info>."""
    return re.findall(rf"^```{re.escape(info)}\n(.*?)^```$", DOC.read_text(), flags=re.M | re.S)


@pytest.mark.paddle
def test_the_documented_session_runs(tmp_path, monkeypatch, val_dataset, capsys):
    from fastdet_cli.api import Evaluation
    from fastdet_cli.infer import Box, ImageResult

    blocks = _blocks("python")
    assert blocks, "docs/api.md has no ```python block"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), ns)
    results, ev = ns["results"], ns["ev"]
    assert len(results) == 2 and all(isinstance(r, ImageResult) and r.error is None for r in results)
    assert all(isinstance(b, Box) and b.score >= 0.5 for r in results for b in r.boxes)
    assert results[0].width == 192 and results[0].runtime_ms > 0  # the generated val images are 192x192
    assert isinstance(ev, Evaluation) and ev.metrics.images == 20 and 0.3 < ev.metrics.map <= 1.0
    assert set(ev.metrics.per_class) == {"circle", "rectangle", "triangle", "cross", "ring"}
    assert "mAP@[.5:.95] on 20 images" in capsys.readouterr().out


def test_the_longer_examples_are_valid_python():
    blocks = _blocks("python no-run")
    assert blocks
    for code in blocks:
        compile(code, str(DOC), "exec")
        for name in re.findall(r"api\.(\w+)\(", code):
            assert callable(getattr(api, name)), name


def test_every_function_in_the_table_exists_and_is_documented():
    names = re.findall(r"^\| `(\w+)\(", DOC.read_text(), flags=re.M)
    assert {"detect", "evaluate", "export", "compress", "bench", "diff", "fetch"} <= set(names)
    for name in names:
        assert getattr(api, name).__doc__, name


@pytest.mark.paddle
def test_detect_records_an_unreadable_image_and_writes_the_cli_record(tmp_path, val_dataset):
    good = val_dataset.image_paths(limit=1)[0][1]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    seen, notes = [], []
    results = api.detect([good, bad], threshold=0.3, json_out=tmp_path / "d.json", save_dir=tmp_path / "drawn",
                         log=notes.append, on_image=seen.append)
    assert seen == results and [r.image for r in results] == [good, bad]
    assert results[1].error and "not a readable image" in results[1].error and results[1].boxes == []
    assert results[0].boxes and all(0 <= b.bbox[0] <= b.bbox[2] <= results[0].width for b in results[0].boxes)
    assert any(n.startswith("note: the embedded model") for n in notes)
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["threshold"] == 0.3 and data["model"] == "default" and data["backend"] == "ort"
    assert data["images"] == json.loads(json.dumps([r.as_dict() for r in results]))
    assert [p.name for p in (tmp_path / "drawn").iterdir()] == [good.name]


@pytest.mark.paddle
def test_diff_returns_typed_results(default_artifacts, tmp_path):
    from fastdet_cli.diff import DiffResult, DiffSummary, ImageDiff

    d = api.diff(dataset="default", limit=4, save_dir=tmp_path / "diff", worst=2, log=lambda m: None)
    assert isinstance(d, DiffResult) and isinstance(d.summary, DiffSummary) and d.summary.images == 4
    assert all(isinstance(i, ImageDiff) for i in d.images) and len(d.worst) == 2
    assert d.summary.matched == sum(i.matched for i in d.images)
    assert json.loads((tmp_path / "diff" / "diff.json").read_text()) == json.loads(json.dumps(d.as_dict()))


@pytest.mark.parametrize("call,match", [
    (lambda p: api.detect(["x.jpg"], threshold=1.5), "--threshold must be a score between 0 and 1"),
    (lambda p: api.detect([p]), "no images given"),  # an empty folder
    (lambda p: api.detect(["x.jpg"], backend="onxr"), "did you mean 'ort'"),
    (lambda p: api.evaluate(dataset=p / "nope"), "dataset not found"),
    (lambda p: api.export(p / "o", fmt="tflite"), "unknown export format"),
    (lambda p: api.diff(save_dir=p / "d"), "give images or --dataset"),
    (lambda p: api.diff(dataset="default", iou=0, save_dir=p / "d"), "--iou must be in (0, 1]"),
    (lambda p: api.diff(dataset="default", model=str(p), save_dir=p / "d"), "--int8-model is needed"),
    (lambda p: api.fetch("ppyoloe_crn_l"), "did you mean"),
])
def test_bad_input_is_a_fastdet_error(tmp_path, call, match):
    with pytest.raises(FastdetError, match=re.escape(match)):
        call(tmp_path)


def test_bench_takes_settings_or_their_fields(monkeypatch):
    from fastdet_cli.bench import run
    from fastdet_cli.bench.run import BenchSettings

    from fastdet_cli.runtime.registry import BACKENDS

    seen = []
    monkeypatch.setattr(run, "run_bench", lambda settings, log, progress: seen.append(settings) or "report")
    assert api.bench(backends=("ort",), repeat=5) == "report"
    assert api.bench(BenchSettings(warmup=3), repeat=7, log=print) == "report"
    assert api.bench(backends="openvino, ort", repeat=2) == "report"  # as --backend gives them
    assert seen[0] == BenchSettings(backends=(BACKENDS["ort"],), repeat=5)  # names resolved once, by the api
    assert seen[1] == BenchSettings(warmup=3, repeat=7)
    assert seen[2].backends == (BACKENDS["openvino"], BACKENDS["ort"])
    with pytest.raises(FastdetError, match="unknown backend 'onnx'"):
        api.bench(backends=("onnx",))
    with pytest.raises(FastdetError, match="empty item"):
        api.bench(backends="ort,")


def test_importing_the_api_is_light():
    code = textwrap.dedent("""
        import sys
        BLOCKED = {"numpy", "cv2", "yaml", "onnx", "onnxruntime", "openvino", "paddle", "rich", "typer"}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked {name}")
        sys.meta_path.insert(0, Block())
        from fastdet_cli import api
        assert not BLOCKED & set(m.split(".")[0] for m in sys.modules)
        print("LIGHT-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0 and "LIGHT-OK" in proc.stdout, proc.stderr[-2000:]
