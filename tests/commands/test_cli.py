"""The CLI boundary: exit codes, one-line errors without tracebacks, outputs written, and --help with only
typer and rich importable."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fastdet_cli.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "fastdet_cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for cmd in ("infer", "export", "eval", "fetch", "env", "compress", "bench", "inspect"):
        assert cmd in proc.stdout


def test_import_and_help_need_only_typer_and_rich(tmp_path):
    """Block every heavy library at import time; the package and --help must still work."""
    code = textwrap.dedent("""
        import sys
        BLOCKED = {"numpy", "cv2", "yaml", "onnx", "onnxruntime", "openvino", "paddle", "paddle2onnx",
                   "paddleslim", "ppdet", "faster_coco_eval", "pycocotools", "tensorrt"}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked {name}")
        sys.meta_path.insert(0, Block())
        import fastdet_cli, fastdet_cli.cli
        for args in (["--help"], ["infer", "--help"], ["export", "--help"], ["eval", "--help"], ["fetch", "--list"]):
            assert fastdet_cli.cli.main(args) == 0, args
        assert not BLOCKED & set(m.split(".")[0] for m in sys.modules)
        print("LIGHT-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="120"))
    assert proc.returncode == 0 and "LIGHT-OK" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("args,match", [
    (["infer", "--model", "/nonexistent/model", "x.jpg"], "model not found"),
    (["infer", "--backend", "onxr", "x.jpg"], "did you mean 'ort'"),
    (["eval", "--dataset", "/nonexistent/ds"], "dataset not found"),
    (["fetch", "ppyoloe_crn_l"], "did you mean"),
    (["export", "--output", "/tmp/x", "--format", "tflite"], "unknown export format"),
    (["infer", "--threshold", "1.5", "x.jpg"], "--threshold must be a score between 0 and 1"),
    (["infer", "--threshold", "-0.1", "x.jpg"], "--threshold must be a score between 0 and 1"),
    (["bench", "--backend", "ort,,"], "has an empty item"),
    (["infer", "--model", "/nonexistent/[trt]", "x.jpg"], "/nonexistent/[trt]"),  # brackets are not markup
])
def test_user_errors_are_one_red_line_exit_2(capsys, args, match):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert match in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    proc = subprocess.run([sys.executable, "-m", "fastdet_cli", "--debug", "infer", "--model", "/nonexistent", "x.jpg"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_usage_error_exit_2(capsys):
    code, _, err = run_cli(capsys, "infer", "--threads", "0", "x.jpg")
    assert code == 2 and "Traceback" not in err


@pytest.mark.paddle
def test_infer_end_to_end_writes_json_and_images(capsys, tiny_models, val_dataset, tmp_path):
    images = [str(p) for _, p in val_dataset.image_paths(limit=2)]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    code, out, err = run_cli(capsys, "infer", "--model", str(tiny_models["nms"]), "--backend", "paddle",
                             *images, str(bad), "--json", str(tmp_path / "d.json"), "--save-dir",
                             str(tmp_path / "img"), "--threshold", "0.5")
    assert code == 2  # one unreadable input: reported, the rest done, non-zero at the end
    assert "not a readable image" in err and "1 of 3 inputs" in err
    data = json.loads((tmp_path / "d.json").read_text())
    # the unreadable input is recorded with its error, not dropped
    assert [os.path.basename(r["image"]) for r in data["images"]] == [os.path.basename(p) for p in images] + ["bad.jpg"]
    assert "not a readable image" in data["images"][-1]["error"] and data["images"][-1]["detections"] == []
    dets = data["images"][0]["detections"]
    assert dets and all(d["score"] >= 0.5 and len(d["bbox"]) == 4 and d["label"] for d in dets)
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == sorted(os.path.basename(p) for p in images)
    assert not [p for p in tmp_path.rglob(".*tmp*")]


@pytest.mark.paddle
def test_export_command_prints_diffs(capsys, tiny_models, tmp_path):
    code, out, err = run_cli(capsys, "export", "--model", str(tiny_models["nms"]), "--output", str(tmp_path / "o"))
    assert code == 0, err
    assert "ONNX vs Paddle Inference" in out and (tmp_path / "o" / "model.onnx").exists()


def test_export_trt_without_tensorrt_is_clear(capsys, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt"):
        pytest.skip("tensorrt installed")
    code, _, err = run_cli(capsys, "export", "--model", "default", "--output", str(tmp_path / "o"), "--format", "trt")
    assert code == 2 and "pip install -e '.[trt-cu12]'" in err  # the extra's brackets survive rich
    assert not (tmp_path / "o").exists()  # refused before any export work


def test_gpu_only_backend_on_a_cpu_machine_says_what_is_missing(capsys, val_dataset):
    import importlib.util

    if importlib.util.find_spec("tensorrt"):
        pytest.skip("tensorrt installed")
    code, _, err = run_cli(capsys, "infer", "-b", "trt", str(val_dataset.image_paths(limit=1)[0][1]))
    assert code == 2 and "'.[trt-cu12]'" in err and "device 'cpu'" not in err
    code, _, err = run_cli(capsys, "infer", "-b", "paddle-trt", str(val_dataset.image_paths(limit=1)[0][1]))
    assert code == 2 and ("GPU" in err or "gpu" in err) and "device 'cpu'" not in err


def test_ort_gpu_on_a_machine_without_its_provider_is_one_error_line(capsys, val_dataset):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu installed")
    code, out, err = run_cli(capsys, "infer", "-b", "ort-gpu", str(val_dataset.image_paths(limit=1)[0][1]))
    assert code == 2 and not out and "Traceback" not in err
    assert err.startswith("error: backend 'ort-gpu' (this onnxruntime ") and len(err.strip().splitlines()) == 1
    assert "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]==" in err


def test_env_lists_every_backend(capsys):
    code, out, _ = run_cli(capsys, "env")
    assert code == 0
    for name in ("ort", "openvino", "paddle", "trt", "paddle-trt", "ort-gpu"):
        assert name in out


def test_tensorrt_version_is_read_from_its_per_cuda_wheel(tmp_path, monkeypatch, capsys):
    """TensorRT installs as tensorrt-cu12 / tensorrt-cu13 (no distribution named plain `tensorrt`): a stand-in
    distribution of that name is what env, the reports and the merged tables read the version from."""
    import importlib

    from fastdet_cli.compress.report import versions
    from fastdet_cli.runtime.registry import BACKENDS

    if BACKENDS["trt"].version() is not None:
        pytest.skip("a real TensorRT is installed here")
    info = tmp_path / "tensorrt_cu12-10.16.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt-cu12\nVersion: 10.16.0\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    importlib.invalidate_caches()
    assert BACKENDS["trt"].version() == "10.16.0" and versions()["tensorrt"] == "10.16.0"
    code, out, _ = run_cli(capsys, "env")
    assert code == 0 and "tensorrt-cu12 10.16.0" in out


def _table_columns(text: str, title: str) -> list[str]:
    """Each column of the table titled `title` in a command's output: its body cells top to bottom, joined, with
    spaces removed. A cell folded over several lines reads whole; one cut ('…') or cropped does not."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.strip() == title)
    body = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            body.append(line.strip().strip("│").split("│"))
    assert body, f"no table {title!r} in:\n{text}"
    return ["".join(cells[k].replace(" ", "") for cells in body) for k in range(len(body[0]))]


@pytest.mark.parametrize("columns", [None, "60"])
def test_piped_tables_never_elide_a_cell(columns):
    """Piped (no terminal: rich would fall back to 80 columns) and on a narrow terminal: no cell is cut. At 60
    columns every cell of `env`'s backend table is folded over lines: each column, read top to bottom, must still
    hold the registry's values whole."""
    from fastdet_cli.runtime.registry import BACKENDS

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    for args in (["env"], ["bench", "--no-int8", "--no-eval", "-b", "ort", "--repeat", "2", "--warmup", "0"]):
        proc = subprocess.run([sys.executable, "-m", "fastdet_cli", *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "…" not in proc.stdout, proc.stdout
        if args[0] == "env":  # backend, library, version (machine-dependent), pip extra, devices, precisions, status
            cols = _table_columns(proc.stdout, "Backends")
            specs = list(BACKENDS.values())
            want = {0: [s.name for s in specs], 1: [s.module for s in specs], 3: [s.extra for s in specs],
                    4: [",".join(s.devices) for s in specs], 5: [",".join(s.precisions) for s in specs]}
            assert {k: cols[k] for k in want} == {k: "".join(v) for k, v in want.items()}, proc.stdout
    if not columns:
        assert "Runtime Benchmark" in proc.stdout and "backend" in proc.stdout


def test_boxes_are_clipped_and_a_lower_threshold_is_honoured(capsys, val_dataset, tmp_path):
    img = tmp_path / "scene[1].jpg"  # brackets in a file name are shown as they are
    img.write_bytes(val_dataset.image_paths(limit=1)[0][1].read_bytes())
    out = tmp_path / "d.json"
    code, stdout, err = run_cli(capsys, "infer", str(img), "--threshold", "0.01", "--json", str(out))
    assert code == 0 and "scene[1].jpg" in stdout and "lowered from the model's 0.025 to 0.01" in err
    data = json.loads(out.read_text())["images"][0]
    dets = data["detections"]
    assert dets and min(d["score"] for d in dets) >= 0.01
    for d in dets:
        x1, y1, x2, y2 = d["bbox"]
        assert 0 <= x1 <= x2 <= data["width"] and 0 <= y1 <= y2 <= data["height"]


def test_bad_output_paths_fail_before_any_work(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    ptq = str(ROOT / "fastdet_cli" / "configs" / "default_ptq.yaml")
    cases = [
        (["eval", "--json", str(tmp_path)], "is a folder; give a file name"),
        (["inspect", "--json", str(tmp_path)], "is a folder; give a file name"),
        (["infer", "--save-dir", str(a_file), "x.jpg"], "is a file, not a folder"),
        (["export", "-o", str(a_file / "sub")], "is a file, not a folder"),
        (["bench", "--report", str(a_file)], "is a file, not a folder"),
        (["compress", ptq, "--save-dir", str(a_file)], "is a file, not a folder"),
        # a wrong eval dataset is found before minutes of PTQ, and nothing is left behind
        (["compress", ptq, "--eval", str(tmp_path / "nope"),
          "--save-dir", str(tmp_path / "out")], "dataset not found"),
    ]
    for args, match in cases:
        t0 = time.perf_counter()
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and match in err and "Traceback" not in err, (args, err)
        assert time.perf_counter() - t0 < 30, args  # nothing heavy ran first
    assert a_file.read_text() == "x" and not (tmp_path / "out").exists()


@pytest.mark.paddle
@pytest.mark.parametrize("backend", ["paddle", "ort"])
def test_broken_paddle_models_are_one_line_errors(tmp_path, val_dataset, backend):
    """Empty files crashed Paddle with a C++ IndexError, random bytes with a segfault: now one line, exit 2."""
    import shutil

    from fastdet_cli.paths import DEFAULT_MODEL_DIR

    img = str(val_dataset.image_paths(limit=1)[0][1])
    rng = np.random.default_rng(0)
    for kind, (model, params) in {"empty": (b"", b""), "random": (rng.bytes(50000), rng.bytes(50000)),
                                  "truncated": ((DEFAULT_MODEL_DIR / "model.pdmodel").read_bytes(),
                                                b"\0" * 1000)}.items():
        d = tmp_path / f"{kind}-{backend}"
        d.mkdir()
        shutil.copy(DEFAULT_MODEL_DIR / "infer_cfg.yml", d)
        (d / "model.pdmodel").write_bytes(model)
        (d / "model.pdiparams").write_bytes(params)
        proc = subprocess.run([sys.executable, "-m", "fastdet_cli", "infer", "--model", str(d), "-b", backend, img],
                              capture_output=True, text=True, env={**os.environ, "FASTDET_CACHE": str(tmp_path / "c")})
        assert proc.returncode == 2, (kind, proc.returncode, proc.stderr[-500:])
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_truncated_jpeg_is_skipped_and_recorded(capsys, val_dataset, tmp_path):
    good = val_dataset.image_paths(limit=1)[0][1]
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good.read_bytes()[:3000])
    out = tmp_path / "d.json"
    code, _, err = run_cli(capsys, "infer", str(bad), str(good), "--json", str(out))
    assert code == 2 and "truncated JPEG" in err
    images = {Path(i["image"]).name: i for i in json.loads(out.read_text())["images"]}
    assert "truncated JPEG" in images["cut.jpg"]["error"] and "error" not in images[good.name]


def test_version_and_short_help(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("fastdet ")
    code, out, _ = run_cli(capsys, "infer", "-h")
    assert code == 0 and "Usage" in out and "<bool>" not in out.split("--help")[0]
