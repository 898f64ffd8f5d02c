"""What the kernel names say about INT8 dot products, for every backend on every CPU kind, from any machine:
OpenVINO names AMX but never VNNI, oneDNN's verbose (Paddle) names both, ONNX Runtime names none. The Zen 4
names come from real bench reports (tests/recorded/cpu-kinds/), the AMX ones from docs/performance.md's Xeon run;
no AVX2-only machine has been benched since issue 20, so its names follow the runtimes' naming rules."""
import json
from pathlib import Path

import pytest

from fastdet_cli.inspection import Inspection
from fastdet_cli.runtime.base import Kernels, OpTime, int8_dot_product

RECORDED = Path(__file__).parent / "recorded" / "cpu-kinds"
AVX2 = ["avx2"]
ZEN4 = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
AMX = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"]
OV, ONEDNN, MLAS = "executed graph", "oneDNN verbose", "CPU flags: MLAS picks by CPUID"


def recorded_int8_rows():
    """(report name, backend, kernels, CPU flags) of every INT8 row in the recorded reports."""
    for path in sorted(RECORDED.glob("*_report.json")):
        report = json.loads(path.read_text())
        flags = report["machine"]["cpu flags"].split()
        for r in report["rows"]:
            if r["precision"] == "int8" and r["kernels"]:
                yield pytest.param(r["backend"], r["kernels"], flags, id=f"{path.stem}-{r['backend']}")


@pytest.mark.parametrize("backend, kernels, flags", list(recorded_int8_rows()))
def test_recorded_zen4_reports_say_vnni_is_used_or_unknown_never_unused(backend, kernels, flags):
    assert "avx512_vnni" in flags and "amx_int8" not in flags
    dot = int8_dot_product(kernels["conv_isa"], kernels["source"], flags)
    # oneDNN names VNNI when it runs it; OpenVINO's names and ORT's CPUID guess cannot tell
    assert dot == {"paddle": "VNNI", "openvino": "VNNI by CPUID", "ort": "VNNI by CPUID"}[backend], kernels


@pytest.mark.parametrize("conv_isa, source, flags, expected", [
    # AMX Xeon, recorded 2026-12-02 (docs/performance.md)
    ({"avx512_amx int8": 127}, OV, AMX, "AMX"),
    ({"avx512_core_amx int8": 125, "avx512_core_vnni int8": 2}, ONEDNN, AMX, "AMX"),
    ({"amx int8": 0, "avx512 f32": 0}, MLAS, AMX, "AMX by CPUID"),
    # AMX CPU whose INT8 kernels are named without AMX: OpenVINO and oneDNN name it when they use it
    ({"avx512 int8": 127}, OV, AMX, "AMX unused"),
    ({"avx512_core int8": 127}, ONEDNN, AMX, "AMX unused"),
    # Zen 4: VNNI without AMX; a oneDNN kernel without 'vnni' on a VNNI CPU did not use it
    ({"avx512 int8": 89, "avx512 f32": 9}, OV, ZEN4, "VNNI by CPUID"),
    ({"avx512_core int8": 16}, ONEDNN, ZEN4, "VNNI unused"),
    # AVX2-only (not recorded: the runtimes' naming rules for that ISA)
    ({"avx2 int8": 98}, OV, AVX2, "no VNNI on this CPU"),
    ({"avx2 int8": 98}, ONEDNN, AVX2, "no VNNI on this CPU"),
    ({"avx2 int8 (int16 pairs)": 0}, MLAS, AVX2, "no VNNI on this CPU"),
    # no INT8 kernel at all
    ({"avx512 f32": 98}, OV, ZEN4, None),
])
def test_int8_dot_product_per_backend_and_cpu_kind(conv_isa, source, flags, expected):
    assert int8_dot_product(conv_isa, source, flags) == expected


def _int8_inspection(backend, conv_isa, source, flags):
    ops = [OpTime(f"conv{i}", "Convolution", "int8", 0.05) for i in range(89)] + \
          [OpTime(f"fconv{i}", "Convolution", "float", 0.01) for i in range(9)]
    k = Kernels(conv_isa, source, "f32", int8_dot_product(conv_isa, source, flags))
    return Inspection("m", backend, True, 3, 1, ops, flags, k)


def test_verdict_does_not_call_vnni_unused_on_zen4_openvino():
    """The false verdict issue 28 found: OpenVINO's `avx512 int8` on a VNNI CPU without AMX."""
    r = _int8_inspection("openvino", {"avx512 int8": 89, "avx512 f32": 9}, OV, ZEN4)
    assert not any("uses it" in line for line in r.verdict()), r.verdict()
    assert "INT8 dot products: VNNI by CPUID" in r.kernels.summary()


@pytest.mark.parametrize("backend, conv_isa, source, flags, unit", [
    ("paddle", {"avx512_core int8": 89}, ONEDNN, ZEN4, "VNNI"),
    ("openvino", {"avx512 int8": 89}, OV, AMX, "AMX"),
])
def test_verdict_says_the_unit_is_unused_where_the_names_measure_it(backend, conv_isa, source, flags, unit):
    r = _int8_inspection(backend, conv_isa, source, flags)
    assert any(line.startswith(f"This CPU has {unit} but no INT8 convolution kernel uses it") for line in r.verdict())


def test_verdict_on_avx2_names_the_missing_vnni():
    r = _int8_inspection("openvino", {"avx2 int8": 89}, OV, AVX2)
    lines = r.verdict()
    assert any(line.startswith("This CPU has no VNNI") for line in lines)
    assert not any("uses it" in line for line in lines)
