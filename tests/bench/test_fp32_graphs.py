"""The FP32 baseline is the best FP32 graph fastdet can make (artifacts.best_fp32): a model whose hard-swishes are
written as Add → Clip → Mul → Div (how paddle2onnx writes them at opset 13) gets a rewritten form with one HardSwish
node, with the same outputs; bench's FP32 row runs whichever is faster on each backend, the graph as given gets a
row of its own, and speedups, the recommendation and the verdicts use the faster FP32 row."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from fastdet_cli.bench.rows import Row
from fastdet_cli.runtime.registry import AS_GIVEN, BACKENDS


@pytest.fixture(scope="module")
def pieces_model(tmp_path_factory):
    """The embedded model's ONNX export with every HardSwish split into its four pieces: the graph a user of
    paddle2onnx at opset 13 has."""
    import onnx

    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.onnx_graph import split_hardswish

    src = onnx_for(resolve_model("default"))
    out = tmp_path_factory.mktemp("pieces")
    model = onnx.load(str(src.path))
    assert split_hardswish(model) > 10
    onnx.save(model, str(out / "model.onnx"))
    shutil.copy2(src.deploy.path, out / src.deploy.path.name)
    return resolve_model(out)


def test_rewritten_graph_fuses_the_pieces_and_keeps_the_outputs(pieces_model):
    import onnx

    from fastdet_cli.artifacts import rewritten_fp32
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    model, what = rewritten_fp32(pieces_model)
    n = int(re.fullmatch(r"hard-swish fused \((\d+)\)", what).group(1))
    ops = [x.op_type for x in onnx.load(str(model.path)).graph.node]
    before = [x.op_type for x in onnx.load(str(pieces_model.path)).graph.node]
    assert ops.count("HardSwish") == n > 10 and "HardSwish" not in before
    assert all(before.count(op) - ops.count(op) == n for op in ("Add", "Clip", "Div"))
    assert model.deploy.path.name == pieces_model.deploy.path.name
    feed = sample_inputs(pieces_model.deploy)
    with create_runner("ort", pieces_model.path, RunnerOptions()) as a, \
            create_runner("ort", model.path, RunnerOptions()) as b:
        for x, y in zip(a.infer({k: feed[k] for k in a.input_metadata()}),
                        b.infer({k: feed[k] for k in b.input_metadata()})):
            assert np.abs(x - y).max() <= 1e-4 * max(1.0, float(np.ptp(x)))
    assert rewritten_fp32(model) is None  # nothing left to rewrite (and that is cached too)


def test_best_fp32_is_the_faster_graph_it_timed(pieces_model):
    from fastdet_cli.artifacts import REWRITE_MARGIN, best_fp32

    form = best_fp32(pieces_model, BACKENDS["ort"], 1)
    assert form.as_given.path == pieces_model.path
    given, rewritten = (float(x) for x in re.findall(r"([\d.]+) ms", form.timing))
    # whichever won on this machine, the choice follows the printed timing and its margin
    assert (form.rewrite != "") == (rewritten * REWRITE_MARGIN <= given)
    assert (form.model.path != form.as_given.path) == bool(form.rewrite)
    spec = BACKENDS["paddle" if pieces_model.format == "paddle" else "ort"]
    assert best_fp32(pieces_model, spec, 1).as_given == form.as_given


def test_bench_rows_use_the_best_fp32_and_show_the_graph_as_given(pieces_model, monkeypatch):
    """The rewrite forced to win (the timing decides on a real run; here the rows' wiring is checked): the FP32
    row runs the rewritten graph, a `fp32 (as given)` row runs the user's, INT8's speedup is over the FP32 row."""
    import fastdet_cli.artifacts as artifacts
    from fastdet_cli.artifacts import Fp32Form, rewritten_fp32
    from fastdet_cli import api
    from fastdet_cli.bench.run import BenchSettings
    from fastdet_cli.render.bench import csv_text, fp32_notes, markdown, table_rows

    model, what = rewritten_fp32(pieces_model)
    monkeypatch.setattr(artifacts, "best_fp32", lambda source, spec, threads=1: Fp32Form(
        model, pieces_model, what, "forced by the test"))
    settings = BenchSettings(model=str(pieces_model.path), int8=False, backends=("ort",), repeat=3, warmup=1,
                             eval=False, bf16=False)
    typed = api.bench(settings, log=lambda m: None)
    report = typed.as_dict()
    rows = {r["precision"]: r for r in report["rows"]}
    assert set(rows) == {"fp32", AS_GIVEN}
    assert rows["fp32"]["model"] == str(model.path) and rows["fp32"]["fp32_graph"]["graph"] == what
    assert rows[AS_GIVEN]["model"] == str(pieces_model.path) and rows[AS_GIVEN]["status"] == "ok"
    assert rows[AS_GIVEN]["speedup"] is None and report["recommendation"]["precision"] == "fp32"
    json.dumps(report)
    table = table_rows(typed, "runtime_ms")
    assert [r[0] for r in table] == ["ort", "ort (FP32 as given)"]
    assert table[1][1] == f"{rows[AS_GIVEN]['runtime_ms']['mean']:.2f}"
    assert fp32_notes(typed) == [f"ort FP32 column: {what} (forced by the test); speedups use it"]
    assert "## FP32 graphs" in markdown(typed) and AS_GIVEN in csv_text(typed)


def test_the_graph_as_given_is_no_baseline_and_never_recommended():
    from fastdet_cli.bench.verdicts import recommend, set_speedups

    ort = BACKENDS["ort"]
    rows = [Row(ort, "fp32", runtime_ms={"mean": 8.0}, map=0.5),
            Row(ort, "int8", runtime_ms={"mean": 6.0}, map=0.5,
                int8_artifact={"method": "PTQ", "path": "/q", "kind": "ort-qdq"}),
            Row(ort, AS_GIVEN, runtime_ms={"mean": 3.0})]  # even when it timed fastest
    set_speedups(rows)
    assert rows[1].speedup["runtime"] == pytest.approx(8 / 6, abs=1e-4) and rows[2].speedup is None
    rec = recommend(rows, 0.5)
    assert (rec.backend, rec.precision) == ("ort", "int8")
