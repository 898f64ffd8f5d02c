"""Shared fixtures: a private cache, the generated val set, tiny real PicoDet models in PaddleDetection's three
export kinds (random weights, built by paddledet in subprocesses), and markers that skip with a reason."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def pytest_collection_modifyitems(config, items):
    reasons = {
        "paddle": None if _has("paddle") and _has("ppdet") and _has("paddle2onnx") else "paddle extra not installed",
        "openvino": None if _has("openvino") else "openvino not installed",
        "trt": None if _has("tensorrt") else "TensorRT not installed (cannot be installed on these machines)",
        "gpu": None if Path("/proc/driver/nvidia/gpus").is_dir() else "no NVIDIA GPU on this machine",
    }
    for item in items:
        for mark, reason in reasons.items():
            if reason and item.get_closest_marker(mark) is not None:  # marks only, not test ids
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def fastdet_cache(tmp_path_factory):
    """Tests share one private cache (generated datasets, exports); never the user's."""
    path = os.environ.get("FASTDET_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["FASTDET_CACHE"] = path
    return Path(path)


@pytest.fixture(scope="session")
def val_dataset(fastdet_cache):
    from fastdet_cli.data.dataset import resolve_dataset

    return resolve_dataset("default")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, val_dataset):
    """{kind: model dir} for kinds nms, boxes_scores, raw_heads. Each export runs in its own process
    (ppdet's dygraph-to-static state leaks between exports in one process)."""
    pytest.importorskip("ppdet", reason="paddledet not installed")
    root = tmp_path_factory.mktemp("tiny")
    data_dir = val_dataset.ann_file.parent.parent
    out = {}
    for kind in ("nms", "boxes_scores", "raw_heads"):
        target = root / kind
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                "from tiny_models import build_tiny_picodet; "
                "build_tiny_picodet(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))")
        proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(target), kind,
                               str(data_dir)], capture_output=True, text=True)
        assert proc.returncode == 0 and (target / "model.pdmodel").exists(), proc.stderr[-2000:]
        out[kind] = target
    return out


@pytest.fixture(scope="session")
def sample_image(val_dataset):
    from fastdet_cli.det.preprocess import read_image

    return read_image(val_dataset.image_paths(limit=1)[0][1])


@pytest.fixture(scope="session")
def default_artifacts(fastdet_cache):
    """The embedded model quantized with the shipped PTQ configs (PaddleSlim and ONNX Runtime engines), cached
    the way `fastdet bench` caches them: {kind: dir}."""
    pytest.importorskip("paddleslim", reason="paddleslim not installed")
    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.compress.defaults import default_artifacts as made
    from fastdet_cli.data.dataset import resolve_dataset
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paths import DEFAULT_MODEL_DIR

    # the two compressions are independent: the ONNX Runtime one runs in a second process while this one makes
    # PaddleSlim's (each is mostly single-threaded; what they share — datasets, FP32 export — is made first)
    resolve_dataset("default")
    resolve_dataset("default:calib")
    onnx_for(resolve_model("default"))
    code = ("from fastdet_cli.compress.defaults import default_artifacts; from fastdet_cli.paths import "
            "DEFAULT_MODEL_DIR; default_artifacts(DEFAULT_MODEL_DIR, log=lambda m: None, only=('default_ptq_ort',))")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        made(DEFAULT_MODEL_DIR, log=lambda m: None, only=("default_ptq",))
    finally:
        _, err = other.communicate()
    assert other.returncode == 0, err[-2000:]
    return {a.kind: a.path for a in made(DEFAULT_MODEL_DIR, log=lambda m: None)}


@pytest.fixture(scope="session")
def default_ptq(default_artifacts):
    """The PaddleSlim PTQ version of the embedded model."""
    return default_artifacts["paddle-program"]


@pytest.fixture(scope="session")
def default_ptq_ort(default_artifacts):
    """The ONNX Runtime engine's PTQ version of the embedded model."""
    return default_artifacts["ort-qdq"]


@pytest.fixture
def stand_in_tool(tmp_path, monkeypatch):
    """`stand_in_tool(name, output)`: a stand-in command-line tool (e.g. nvidia-smi) printing `output`, the only
    thing on PATH."""
    def make(name: str, output: str) -> Path:
        tool = tmp_path / "bin" / name
        tool.parent.mkdir(exist_ok=True)
        tool.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in output.splitlines()))
        tool.chmod(0o755)
        monkeypatch.setenv("PATH", str(tool.parent))
        return tool

    return make
