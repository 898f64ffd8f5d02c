"""`fastdet inspect`: the runtimes' own per-op profiles, classified by precision, and the verdict."""
import json

import pytest

from fastdet_cli.cli import main
from fastdet_cli.errors import FastdetError
from fastdet_cli.inspection import inspect_model
from fastdet_cli.runtime.registry import BACKENDS

pytestmark = pytest.mark.paddle  # the INT8 model comes from PaddleSlim


def test_fp32_on_ort_has_no_int8_and_says_so():
    r = inspect_model("default", BACKENDS["ort"], runs=3)
    assert not r.quantized and r.convs()[0] == 0 and r.convs()[1] > 50
    assert r.total_ms > 0 and [o.ms for o in r.ops] == sorted((o.ms for o in r.ops), reverse=True)
    assert r.verdict()[0].startswith("FP32 model")


def test_int8_on_ort_runs_fake_quantized_and_the_verdict_names_it(default_ptq):
    r = inspect_model(str(default_ptq), BACKENDS["ort"], runs=3)
    assert r.quantized and r.convs()[0] == 0  # Q/DQ on conv inputs only: ORT builds no QLinearConv
    assert r.by_precision()["q/dq"][0] > 100
    assert r.verdict()[0].startswith("No convolution runs in INT8 on ort")


@pytest.mark.openvino
def test_int8_on_openvino_runs_convolutions_in_int8(default_ptq):
    r = inspect_model(str(default_ptq), BACKENDS["openvino"], runs=3)
    int8, fp = r.convs()
    assert int8 > 50 and fp < int8
    assert not any(line.startswith("No convolution") for line in r.verdict())
    assert r.optimized_graph is None  # OpenVINO does not expose its optimized graph as ONNX


def test_backend_without_profile_is_a_clear_error():
    with pytest.raises(FastdetError, match="no per-op profile"):
        inspect_model("default", BACKENDS["paddle"], runs=1)


def test_cli_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "inspect.json"
    assert main(["inspect", "-b", "ort", "--runs", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["backend"] == "ort" and data["ops"] and data["verdict"]
    assert "slowest ops" in capsys.readouterr().out


def test_cli_int8_inspects_the_model_bench_runs_on_that_backend(default_artifacts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "inspect.json"
    assert main(["inspect", "--int8", "-b", "ort", "--runs", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["quantized"] and data["model"].startswith(str(default_artifacts["ort-qdq"]))
    assert data["convs"]["int8"] >= 0.9 * (data["convs"]["int8"] + data["convs"]["float"])
    # ORT's optimized graph read back: the float islands compress counted for the same model, and said so
    report = json.loads((default_artifacts["ort-qdq"] / "compress_report.json").read_text())
    want = report["config_resolved"]["ort_optimized_graph"]
    assert data["optimized_graph"]["float_between_int8"] == want["float_between_int8"]
    assert data["optimized_graph"]["float_between_int8_types"] == want["float_between_int8_types"]
    assert "optimized graph:" in capsys.readouterr().out
    assert main(["inspect", "--int8", "-b", "ort", "-m", "default_missing_dir"]) == 2


@pytest.mark.openvino
def test_kernels_name_the_instruction_set_this_cpu_has(default_artifacts, tmp_path, monkeypatch):
    """OpenVINO's executed graph names each convolution's kernel: AMX where it uses AMX, never VNNI. The expectation
    follows this CPU's flags on purpose (tests/test_kernels.py covers every kind from recorded names)."""
    from fastdet_cli.machine import cpu_model_and_flags

    flags = cpu_model_and_flags()[1]
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "inspect.json"
    assert main(["inspect", "--int8", "-b", "openvino", "--runs", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    k = data["kernels"]
    assert k["source"] == "executed graph" and k["inference_precision"] == "f32"
    int8 = [isa for isa in k["conv_isa"] if isa.endswith(" int8")]
    assert int8, k
    assert any("avx512" in isa for isa in int8) == ("avx512f" in flags), (k, flags)
    expected = ("AMX" if "amx_int8" in flags else "VNNI by CPUID" if {"avx512_vnni", "avx_vnni"} & set(flags)
                else "no VNNI on this CPU")
    assert k["int8_dot"] == expected, (k, flags)
    assert not any("uses it" in line for line in data["verdict"]), data["verdict"]
