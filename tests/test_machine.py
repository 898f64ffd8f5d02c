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
