"""runtime/registry.py: the backend table is consistent with itself and with what reads it (create_runner's
validation, artifacts' INT8 kinds, export's ONNX flavours); its errors say why; `check_can_run` is the one
"can this backend run here" check. (The CLI's choices and the generic mode sweep are in test_runners.py.)"""
from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from fastdet_cli.errors import FastdetError, MissingDependency, NoDevice, UnsupportedMode
from fastdet_cli.runtime import registry
from fastdet_cli.runtime.base import Runner, RunnerOptions
from fastdet_cli.runtime.registry import (BACKENDS, MODE_LABELS, MODES, BackendSpec, create_runner, get_backend,
                                          visible_devices)

SPECS = list(BACKENDS.values())
# not the bare name: conftest skips a test whose keywords include a marker's name ("trt", "paddle", "gpu")
ids = [f"{s.name}-row" for s in SPECS]


@pytest.mark.parametrize("spec", SPECS, ids=ids)
def test_each_row_is_consistent(spec):
    from fastdet_cli.artifacts import KIND_LABELS
    from fastdet_cli.export.targets import ONNX_TARGETS

    assert spec.model_format in ("onnx", "paddle")
    assert spec.devices and set(spec.devices) <= {"cpu", "gpu"}
    assert "fp32" in spec.modes and set(spec.modes) <= set(MODES)
    assert "fp32" in spec.precisions
    for mode in spec.modes:
        # every mode it offers builds options its own create_runner accepts (else bench's cell would fail)
        assert spec.mode_options(mode, 2).precision in spec.precisions, mode
        if mode.endswith("+pm"):  # pinned host memory only means something for host<->device copies
            assert spec.copies_in_compute and "gpu" in spec.devices
    reasons = dict(spec.no_mode_reasons)
    assert set(reasons) <= set(MODES) - set(spec.modes), "a reason given for a mode it has is never shown"
    assert all(why and "\n" not in why for why in reasons.values())
    assert spec.int8_kinds and set(spec.int8_kinds) <= set(KIND_LABELS)
    assert len(set(spec.int8_kinds)) == len(spec.int8_kinds)
    assert spec.onnx_target in ONNX_TARGETS
    module, cls = spec.target.split(":")
    assert module.startswith("fastdet_cli.runtime.") and cls
    assert importlib.util.find_spec(module) is not None  # found without importing the backend's library


@pytest.mark.parametrize("spec", [s for s in SPECS if s.installed()],
                         ids=[f"{s.name}-row" for s in SPECS if s.installed()])
def test_installed_backends_name_their_runner(spec):
    runner = spec.runner_class()
    assert issubclass(runner, Runner) and runner.name == spec.name


def test_mode_options_are_typed_options_for_the_device_it_runs_on():
    opts = BACKENDS["trt"].mode_options("int8+fp16+pm", 4)
    assert opts == RunnerOptions(device="gpu", threads=4, precision="int8", fp16=True, pinned=True)
    opts = BACKENDS["openvino"].mode_options("int8+fp16", 2)
    assert opts == RunnerOptions(device="cpu", threads=2, precision="int8", fp16=True)
    assert BACKENDS["paddle"].mode_options("bf16", 1) == RunnerOptions(precision="bf16")


@pytest.mark.parametrize("name, mode, why", [
    ("ort", "bf16", "ONNX Runtime's CPU provider has no bf16 convolutions"),
    ("paddle", "int8+fp16", "Paddle Inference 2.6 runs oneDNN INT8 or BF16, not both"),
    ("openvino", "int8+fp16+pm", "openvino has no pinned-memory mode on CPU"),
    ("paddle", "int8+fp16+pm", "paddle has no pinned-memory mode on CPU"),
    ("trt", "bf16", "trt has no BF16 mode"),  # a GPU-only backend: no "on CPU"
    ("paddle-trt", "int8+fp16", "paddle-trt has no INT8+FP16/BF16 mode"),
    ("ort-gpu", "bf16", "ONNX Runtime's CUDA provider runs an FP32 model in fp32"),
    ("ort-gpu", "int8+fp16+pm", "fastdet gives ONNX Runtime host arrays (session.run), no pinned-memory"),
])
def test_a_mode_a_backend_lacks_is_unsupported_with_a_reason(name, mode, why):
    with pytest.raises(UnsupportedMode) as e:
        BACKENDS[name].mode_options(mode, 1)
    message = str(e.value)
    assert message.startswith(why) and "\n" not in message
    if BACKENDS[name].gpu_only:
        assert not message.endswith("on CPU")


def test_mode_labels_cover_every_mode():
    assert set(MODE_LABELS) == set(MODES)


def test_get_backend_returns_a_spec_as_it_is():
    spec = BACKENDS["openvino"]
    assert get_backend(spec) is spec and get_backend("openvino") is spec


@pytest.mark.parametrize("typo, close", [("paddle_trt", "paddle-trt"), ("paddletrt", "paddle-trt"),
                                         ("tensorrt", "trt"), ("pad", "paddle")])
def test_unknown_backend_suggests_the_close_name(typo, close):
    with pytest.raises(FastdetError) as e:
        get_backend(typo)
    assert str(e.value) == (f"unknown backend '{typo}' (did you mean '{close}'?); "
                            f"choose from {', '.join(BACKENDS)}")


def test_unknown_backend_with_nothing_close_lists_the_choices():
    with pytest.raises(FastdetError) as e:
        get_backend("xyz")
    assert "did you mean" not in str(e.value) and str(e.value).endswith(", ".join(BACKENDS))


def _without(monkeypatch, absent: str):
    """importlib.util.find_spec as if `absent` were not installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] == absent else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("name", ["ort", "openvino", "paddle"])
def test_check_can_run_names_the_pip_extra_of_an_absent_library(monkeypatch, name):
    spec = BACKENDS[name]
    spec.check_can_run()  # installed here: nothing to say (a CPU backend needs no GPU)
    _without(monkeypatch, spec.module)
    assert not spec.installed()
    with pytest.raises(MissingDependency) as e:
        spec.check_can_run()
    assert e.value.module == spec.module and e.value.extra == spec.extra
    assert str(e.value) == (f"backend '{name}' needs the Python package '{spec.module}', which is not installed: "
                            f"in the fastdet clone, pip install -e '.[{spec.extra}]'")


def test_check_can_run_on_a_gpu_only_backend_needs_a_visible_gpu(monkeypatch):
    spec = BACKENDS["paddle-trt"]  # its library (paddle) is installed here; the GPU is the stand-in
    monkeypatch.setattr(registry, "cuda_device_count", lambda: 0)
    with pytest.raises(NoDevice, match=r"^backend 'paddle-trt' needs an NVIDIA GPU, and none is visible"):
        spec.check_can_run()
    monkeypatch.setattr(registry, "cuda_device_count", lambda: 1)
    spec.check_can_run()
    _without(monkeypatch, "paddle")  # the library is checked first: installing it is the first thing to do
    with pytest.raises(MissingDependency, match=r"pip install -e '\.\[paddle\]'"):
        spec.check_can_run()


def test_check_can_run_asks_the_runner_between_the_library_and_the_gpu(monkeypatch):
    """Runner.check_available is the generic hook (no backend name compared): called once the library is found,
    before the GPU is looked for (what to install comes first), never when the library is missing."""
    calls = []

    class Stub(Runner):
        name = "paddle-trt"

        @classmethod
        def check_available(cls):
            calls.append("asked")
            raise MissingDependency("paddle-gpu-build", "paddle", "backend 'paddle-trt'", hint="build it")

    spec = BACKENDS["paddle-trt"]  # its library (paddle) is installed here
    monkeypatch.setattr(BackendSpec, "runner_class", lambda self: Stub)
    monkeypatch.setattr(registry, "cuda_device_count", lambda: 0)
    with pytest.raises(MissingDependency, match="paddle-gpu-build.*build it$"):
        spec.check_can_run()
    assert calls == ["asked"]
    _without(monkeypatch, "paddle")
    with pytest.raises(MissingDependency, match=r"pip install -e '\.\[paddle\]'"):
        spec.check_can_run()
    assert calls == ["asked"]


def test_a_library_no_extra_brings_is_named_with_its_install_command(monkeypatch):
    """ort-gpu's wheel replaces onnxruntime: no pip extra of fastdet can bring it, so the row's install_hint is
    what check_can_run and create_runner say when the module is missing altogether."""
    spec = BACKENDS["ort-gpu"]
    assert spec.extra == "none" and spec.install_hint
    _without(monkeypatch, "onnxruntime")
    with pytest.raises(MissingDependency) as e:
        spec.check_can_run()
    msg = str(e.value)
    assert msg.startswith("backend 'ort-gpu' needs the Python package 'onnxruntime', which is not installed: ")
    assert "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]==" in msg
    assert "pip install -e" not in msg and "fastdet clone" not in msg
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'onnxruntime-gpu\[cuda,cudnn\]=="):
        create_runner(spec, "m.onnx", RunnerOptions())


def test_version_reads_any_of_the_distribution_names(monkeypatch):
    assert BACKENDS["ort"].version() == importlib.metadata.version("onnxruntime")
    spec = BackendSpec("x", "fastdet_cli.runtime.x:X", "xlib", "xlib", "x", "onnx", ("gpu",), ("fp32",), ("fp32",),
                       "test row", other_dists=("xlib-cu12", "xlib-cu13"))
    real = importlib.metadata.version

    def version(dist):
        if dist == "xlib-cu13":  # TensorRT's wheels are named per CUDA major
            return "10.9"
        if dist.startswith("xlib"):
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert spec.version() == "10.9"
    assert BackendSpec("y", "m:Y", "ylib", "ylib", "y", "onnx", ("cpu",), ("fp32",), ("fp32",), "").version() is None


def test_create_runner_refuses_a_device_the_backend_lacks():
    with pytest.raises(FastdetError, match=r"^backend 'ort' does not run on device 'npu' \(it runs on: cpu, gpu\)$"):
        create_runner(BACKENDS["ort"], "m.onnx", RunnerOptions(device="npu"))


def test_create_runner_refuses_a_precision_the_backend_lacks():
    with pytest.raises(FastdetError, match=r"^backend 'ort' has no bf16 mode \(it has: fp32, int8\)$"):
        create_runner(BACKENDS["ort"], "m.onnx", RunnerOptions(precision="bf16"))
    with pytest.raises(FastdetError, match=r"has no fp16 mode"):
        create_runner(BACKENDS["paddle"], "model_dir", RunnerOptions(precision="fp16"))


def test_create_runner_builds_without_activating():
    # building is separate from running: no model file is read until activate()
    r = create_runner(BACKENDS["ort"], "does-not-exist.onnx", RunnerOptions(device="gpu:1", threads=3))
    assert r.name == "ort" and not r.is_active and r.options.threads == 3
    ov = create_runner(BACKENDS["openvino"], "m.onnx", RunnerOptions(device="GPU.0"))  # its own device names
    assert ov.name == "openvino" and ov.options.device == "GPU.0"


def test_create_runner_names_the_extra_of_an_absent_library(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(MissingDependency, match=r"^backend 'openvino' needs .*pip install -e '\.\[openvino\]'$"):
        create_runner(BACKENDS["openvino"], "m.onnx", RunnerOptions())


@pytest.mark.parametrize("physical, visible, seen", [
    (2, None, 2),  # unset: every GPU
    (2, "0, 1", 2),  # spaces around entries are CUDA's too
    (1, "0,0", 1),  # never more than the machine has
    (2, "GPU-a,MIG-b,GPU-c", 2),
    (4, "3,2,x,1", 2),  # up to the first entry that names no device
    (0, "0", 0),
])
def test_visible_devices_follows_cuda_s_rule(physical, visible, seen):
    assert visible_devices(physical, visible) == seen
