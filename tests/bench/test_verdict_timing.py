"""bench's INT8 verdict first times the two models again alternately: on a small model the table's rows, timed
one after the other, move with the load on the other core by more than INT8's gain (issue 28)."""
import re

import pytest

pytestmark = pytest.mark.paddle  # the INT8 model comes from the compress engines


def test_a_losing_int8_row_is_timed_again_alternately_before_the_profile(default_ptq_ort):
    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.bench.rows import Row
    from fastdet_cli.runtime.registry import BACKENDS
    from fastdet_cli.bench.verdicts import int8_verdicts, set_speedups
    from fastdet_cli.det.model import resolve_model

    fp32_model = str(onnx_for(resolve_model("default")).path)
    # the table said INT8 lost (as `make demo`'s 100-run rows did on a Zen 4): 4.58 ms against 3.78
    rows = [Row(BACKENDS["ort"], "fp32", runtime_ms={"mean": 3.78}, model=fp32_model),
            Row(BACKENDS["ort"], "int8", runtime_ms={"mean": 4.58}, model=str(default_ptq_ort),
                int8_artifact={"method": "PTQ (ORT)", "path": str(default_ptq_ort), "kind": "ort-qdq"})]
    set_speedups(rows)
    said = []
    verdict = int8_verdicts(rows, 1, said.append)["ort"]
    m = re.match(r"timed again alternately with FP32: INT8 ([\d.]+) ms, FP32 ([\d.]+) ms \(([\d.]+)×\): INT8 is "
                 r"(faster|not faster)", verdict[0])
    assert m, verdict
    int8_ms, fp32_ms, ratio = float(m[1]), float(m[2]), float(m[3])
    assert int8_ms > 0 and fp32_ms > 0 and abs(ratio - fp32_ms / int8_ms) < 0.01
    assert (m[4] == "faster") == (int8_ms < fp32_ms)
    assert len(verdict) >= 2 and said  # the profile's verdict follows, and the log said what it is doing


def test_paddle_verdict_counts_the_int8_convolutions_from_onednn():
    """Paddle has no per-op profile in fastdet, but oneDNN's verbose counts its kernels: the verdict says how many
    convolutions ran in INT8 (Zen 4, `make demo`: 16 of 98, the oneDNN op set 'conv')."""
    import json
    from pathlib import Path

    from fastdet_cli.bench.rows import Row
    from fastdet_cli.runtime.registry import BACKENDS
    from fastdet_cli.bench.verdicts import kernel_count_line

    report = json.loads((Path(__file__).parents[1] / "recorded" / "cpu-kinds" /
                         "zen4-avx512vnni-noamx_embedded_demo_report.json").read_text())
    row = next(r for r in report["rows"] if r["backend"] == "paddle" and r["precision"] == "int8")
    line = kernel_count_line(Row(BACKENDS["paddle"], "int8", kernels=row["kernels"]))
    assert line.startswith("16 of 98 convolutions ran in INT8 (") and "avx512_core_vnni int8 16" in line
    assert kernel_count_line(Row(BACKENDS["paddle"], "int8")) is None
