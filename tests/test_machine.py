"""What depends on the CPU kind, decided from its flags: both kinds of the project's machines are checked here,
whichever this one is (AVX2-only AMD EPYC; Intel Xeon with AVX512-VNNI, AVX512-BF16 and AMX)."""
import pytest

from fastdet_cli import machine

AVX2 = ("AMD EPYC", ["avx2"])
AMX = ("Intel(R) Xeon(R) Processor", ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                                      "amx_int8", "amx_bf16"])
ZEN4 = ("AMD EPYC 9004", ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])


@pytest.mark.parametrize("cpu, bits, bf16", [(AVX2, 7, False), (AMX, 8, True), (ZEN4, 8, True)])
def test_weight_bits_and_bf16_follow_the_flags(monkeypatch, cpu, bits, bf16):
    monkeypatch.setattr(machine, "cpu_model_and_flags", lambda: cpu)
    assert machine.int8_weight_bits()[0] == bits
    assert machine.int8_weight_bits(gpu=True)[0] == 8  # GPUs never pair products in int16
    assert machine.cpu_has(machine.BF16_FLAGS) == bf16


def test_ort_engine_reduce_range_follows_the_cpu(monkeypatch):
    from fastdet_cli.compress.config import load_compress_config
    from fastdet_cli.compress.ort_engine import quant_settings
    from fastdet_cli.paths import DEFAULT_PTQ_ORT_CONFIG

    cfg = load_compress_config(DEFAULT_PTQ_ORT_CONFIG)
    for cpu, reduce_range in ((AVX2, True), (AMX, False)):
        monkeypatch.setattr(machine, "cpu_model_and_flags", lambda cpu=cpu: cpu)
        s = quant_settings(cfg)
        assert s["reduce_range"] is reduce_range and ("VNNI" in s["reduce_range_reason"]), s


def test_openvino_bf16_is_none_on_a_cpu_without_it(monkeypatch):
    from fastdet_cli.errors import UnsupportedMode
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.openvino import OpenVinoRunner

    monkeypatch.setattr(machine, "cpu_model_and_flags", lambda: AVX2)
    runner = OpenVinoRunner(b"", RunnerOptions(precision="bf16"))
    with pytest.raises(UnsupportedMode, match="no bf16"):
        runner.precision_hint("CPU")
    assert OpenVinoRunner(b"", RunnerOptions(precision="fp32")).precision_hint("CPU") == "f32"
    monkeypatch.setattr(machine, "cpu_model_and_flags", lambda: AMX)
    assert runner.precision_hint("CPU") == "bf16"


# ---- GPU facts: the one version lookup, the CUDA flavour of a pip hint (stand-ins: no GPU, no TensorRT here) ----

def _stand_in_dist(tmp_path, monkeypatch, name: str, version: str) -> None:
    """A distribution `name` `version` that importlib.metadata finds (a dist-info folder on sys.path), nothing
    importable in it: what `pip install tensorrt-cu12` leaves for the version lookup, without the library."""
    import importlib
    import sys

    info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    importlib.invalidate_caches()


@pytest.mark.parametrize("dist", ["tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12_libs", "tensorrt_cu13_bindings"])
def test_tensorrt_version_from_whichever_distribution_is_installed(tmp_path, monkeypatch, dist):
    from typer.testing import CliRunner

    from fastdet_cli.cli import app
    from fastdet_cli.runtime.registry import BACKENDS

    trt = BACKENDS["trt"]
    if trt.version() is not None:
        pytest.skip("a real TensorRT is installed here")
    assert machine.installed_distribution((trt.dist, *trt.other_dists)) is None
    _stand_in_dist(tmp_path, monkeypatch, dist, "10.16.0")
    assert machine.installed_distribution((trt.dist, *trt.other_dists)) == (dist, "10.16.0")
    assert trt.version() == "10.16.0"
    res = CliRunner().invoke(app, ["env"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    line = next(row for row in res.output.splitlines() if "TensorRT" in row)
    assert f"{dist} 10.16.0" in line, line


def test_the_ort_version_is_read_from_the_gpu_wheel_too(tmp_path, monkeypatch):
    """onnxruntime-gpu replaces onnxruntime (same module): the ort row's version comes from whichever is there."""
    import importlib.metadata

    from fastdet_cli.runtime.registry import BACKENDS

    real = importlib.metadata.version

    def version(dist):
        if dist == "onnxruntime":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    _stand_in_dist(tmp_path, monkeypatch, "onnxruntime-gpu", "1.31.1")
    assert BACKENDS["ort"].version() == "1.31.1"


@pytest.mark.parametrize("driver, extras, absent", [
    ("535.104.05", ["trt-cu12"], ["trt-cu13", "update"]),  # r525–r570: the CUDA 13 wheels fail there
    ("570.86.10", ["trt-cu12"], ["trt-cu13"]),
    ("580.65.06", ["trt-cu13"], ["trt-cu12"]),
    ("590.1", ["trt-cu13"], ["trt-cu12"]),
    ("470.256.02", ["trt-cu12", "update the NVIDIA driver to r525"], ["trt-cu13"]),
    (None, ["trt-cu12", "trt-cu13", "no NVIDIA driver version found"], []),
    ("garbled", ["trt-cu12", "trt-cu13"], []),
])
def test_the_trt_hint_names_the_flavour_the_driver_runs(monkeypatch, driver, extras, absent):
    from fastdet_cli.errors import MissingDependency

    hint = machine.pip_hint("trt", driver)
    assert all(e in hint for e in extras) and not any(a in hint for a in absent), hint
    monkeypatch.setattr(machine, "nvidia_driver", lambda: driver)
    err = str(MissingDependency("tensorrt", "trt", "backend 'trt'"))
    assert err.startswith("backend 'trt' needs the Python package 'tensorrt', which is not installed: ") and hint in err
    # an extra without CUDA flavours is named as it is, without asking for the driver
    monkeypatch.setattr(machine, "nvidia_driver", lambda: pytest.fail("driver read for a CPU extra"))
    assert str(MissingDependency("openvino", "openvino", "x")).endswith(
        ": in the fastdet clone, pip install -e '.[openvino]'")


def test_every_flavoured_extra_exists_in_pyproject_and_trt_is_the_cuda12_one():
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in machine.CUDA_FLAVOURED_EXTRAS:
        for flavour, _ in machine.CUDA_FLAVOURS:
            assert f"{extra}-{flavour}" in extras
    # the bare `trt` runs on every driver TensorRT 10 supports (r525+): CUDA 12, never an unbounded cuda-python
    assert sorted(extras["trt"]) == sorted(extras["trt-cu12"])
    assert all("cu13" not in r and r != "cuda-python>=12" for r in extras["trt"])


def test_the_driver_version_from_proc_else_nvidia_smi(monkeypatch, tmp_path, stand_in_tool):
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n")
    monkeypatch.setattr(machine, "Path", lambda p: proc if p.endswith("/version") else tmp_path / "none")
    assert machine.nvidia_driver() == "535.104.05"
    monkeypatch.setattr(machine, "Path", lambda p: tmp_path / "none")
    stand_in_tool("nvidia-smi", "580.65.06")
    assert machine.nvidia_driver() == "580.65.06"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert machine.nvidia_driver() is None
