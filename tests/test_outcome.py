"""outcome.py: what became of one measurement, from the exception that stopped it — the errors the backend table
itself raises, subclasses, and messages that are empty, multi-line or long."""
from __future__ import annotations

import dataclasses

import pytest

from fastdet_cli.errors import FastdetError, MissingDependency, NoDevice, UnsupportedMode
from fastdet_cli.outcome import FAILED, NONE, RAN, SKIPPED, STATES, Outcome
from fastdet_cli.runtime.registry import BACKENDS


def test_the_table_s_own_errors_map_to_none_and_skipped(monkeypatch):
    # a mode the backend lacks: "None", with the backend's own reason
    with pytest.raises(UnsupportedMode) as lacks:
        BACKENDS["ort"].mode_options("bf16", 1)
    assert Outcome.of(lacks.value) == Outcome(NONE, dict(BACKENDS["ort"].no_mode_reasons)["bf16"])
    # a library that is not installed: "skipped", naming the pip extra
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependency) as missing:
        BACKENDS["openvino"].check_can_run()
    out = Outcome.of(missing.value)
    assert out.state == SKIPPED and "pip install -e '.[openvino]'" in out.why and not out.ok


def test_subclasses_keep_their_family_s_state():
    class NoSuchKernel(UnsupportedMode):
        pass

    class NoGpuHere(NoDevice):
        pass

    assert Outcome.of(NoSuchKernel("no int8 conv")).state == NONE
    assert Outcome.of(NoGpuHere("no GPU")) == Outcome(SKIPPED, "no GPU")
    # any other user error is a failure of this measurement, named by its type
    assert Outcome.of(FastdetError("model not found: x")) == Outcome(FAILED, "FastdetError: model not found: x")


@pytest.mark.parametrize("error, why", [
    (ImportError("libcudnn.so.8: cannot open shared object file"),  # a broken install is not "not installed"
     "ImportError: libcudnn.so.8: cannot open shared object file"),
    (RuntimeError(""), "RuntimeError: "),
    (RuntimeError("   \n  "), "RuntimeError: "),
    (ValueError("\n  first real line\nsecond"), "ValueError: first real line"),
    (KeyError("boxes"), "KeyError: 'boxes'"),
])
def test_other_errors_fail_with_their_type_and_first_line(error, why):
    assert Outcome.of(error) == Outcome(FAILED, why)


def test_a_long_failure_reason_is_cut_to_300_characters():
    out = Outcome.of(RuntimeError("x" * 1000))
    assert out.state == FAILED and len(out.why) == 300 and out.why.startswith("RuntimeError: xxx")


def test_states_text_and_immutability():
    assert STATES == (RAN, NONE, SKIPPED, FAILED)
    assert Outcome().ok and Outcome().state == RAN and str(Outcome()) == "ok"
    assert not Outcome(NONE, "no bf16").ok and str(Outcome(NONE, "no bf16")) == "None: no bf16"
    assert str(Outcome(FAILED, "ValueError: bad")) == "failed: ValueError: bad"
    with pytest.raises(ValueError, match="unknown outcome state 'none'"):
        Outcome("none")  # the reference's word is "None", exactly
    with pytest.raises(dataclasses.FrozenInstanceError):
        Outcome().state = FAILED
