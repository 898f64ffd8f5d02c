"""Shape and sanity of bench results on the embedded model with small repeat counts (not timings)."""
import json

import numpy as np
import pytest

from fastdet_cli import api
from fastdet_cli.bench.latency import Stats
from fastdet_cli.bench.report import BenchReport
from fastdet_cli.bench.run import BenchSettings, Row
from fastdet_cli.render.bench import table_rows
from fastdet_cli.runtime.registry import BACKENDS
from fastdet_cli.errors import FastdetError


def test_stats_match_numpy():
    xs = list(np.random.default_rng(0).uniform(0.001, 0.01, 1000))
    s = Stats.of(xs)
    ms = np.array(xs) * 1000
    assert s.n == 1000 and s.mean == pytest.approx(ms.mean()) and s.p50 == pytest.approx(np.median(ms), rel=1e-2)
    assert (s.p90 == pytest.approx(np.percentile(ms, 90), rel=1e-2)
            and s.p99 == pytest.approx(np.percentile(ms, 99), rel=2e-2))
    assert s.stdev == pytest.approx(ms.std(ddof=1))


def test_cpu_backends_have_no_fp16_or_pinned_mode():
    from fastdet_cli.errors import UnsupportedMode
    from fastdet_cli.runtime.registry import get_backend

    with pytest.raises(UnsupportedMode, match="no bf16/fp16"):
        get_backend("ort").mode_options("int8+fp16", 1)
    with pytest.raises(UnsupportedMode, match="pinned-memory"):
        get_backend("paddle").mode_options("int8+fp16+pm", 1)
    assert get_backend("trt").mode_options("int8+fp16+pm", 1).pinned


def test_progress_hears_of_every_run():
    """The bar's total is warm-up + timed runs; it fills whatever the repeat count."""
    from fastdet_cli.bench.latency import time_calls

    for warmup, repeat in ((0, 7), (3, 10), (5, 23)):
        ticks = []
        assert len(time_calls(lambda: None, warmup, repeat, ticks.append)) == repeat
        assert sum(ticks) == warmup + repeat


def test_outcomes_of_errors():
    from fastdet_cli.errors import MissingDependency, NoDevice, UnsupportedMode
    from fastdet_cli.outcome import Outcome

    assert Outcome.of(UnsupportedMode("no INT8 mode")) == Outcome("None", "no INT8 mode")
    assert Outcome.of(NoDevice("no GPU")).state == "skipped"
    assert Outcome.of(MissingDependency("tensorrt", "trt", "backend 'trt'")).state == "skipped"
    assert Outcome.of(ValueError("bad\nsecond")) == Outcome("failed", "ValueError: bad")
    assert str(Outcome()) == "ok" and str(Outcome("skipped", "no GPU")) == "skipped: no GPU"
    with pytest.raises(ValueError):
        Outcome("maybe")


@pytest.mark.paddle
@pytest.mark.openvino
def test_bench_default_model_end_to_end(default_ptq, tmp_path):
    # mAP on the whole val split (200 images, eval_limit None): the setting the bounds below were measured in
    settings = BenchSettings(backends=("ort", "openvino", "paddle", "trt", "paddle-trt"),
                             fp16=True, pinned=True, repeat=5, warmup=10, eval_limit=None)
    typed = api.bench(settings, log=lambda m: None, report_dir=tmp_path / "rep")
    report = typed.as_dict()
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    from fastdet_cli.machine import BF16_FLAGS, cpu_has

    bf16 = cpu_has(BF16_FLAGS)  # the BF16 row is there by default exactly where the CPU has bf16 in hardware
    assert len(rows) == 5 * (5 if bf16 else 4)
    if bf16:  # FP32 arithmetic rounded to bf16: the same mAP within a point; ORT has no bf16 kernels
        for b in ("openvino", "paddle"):
            assert rows[(b, "bf16")]["status"] == "ok", rows[(b, "bf16")]["status"]
            assert abs(rows[(b, "bf16")]["map"] - rows[(b, "fp32")]["map"]) < 0.01
            assert (rows[(b, "bf16")]["kernels"]["conv_isa"]
                    and "bf16" in " ".join(rows[(b, "bf16")]["kernels"]["conv_isa"]))
        assert rows[("ort", "bf16")]["status"] == "None" and "bf16" in rows[("ort", "bf16")]["why"]
    assert "f32" in rows[("openvino", "fp32")]["kernels"]["inference_precision"]  # FP32 rows stay FP32
    for b in ("ort", "openvino", "paddle"):
        for prec in ("fp32", "int8"):
            r = rows[(b, prec)]
            assert r["status"] == "ok"
            for key in ("runtime_ms", "end2end_ms"):
                st = r[key]
                assert st["n"] == 5 and 0 < st["p50"] <= st["p99"] and st["mean"] > 0
            # end-to-end includes the runtime: its stages are timed inside the same calls (no comparison of two
            # timings here — machines are shared; benchmarks, not unit tests, compare speeds)
            assert r["stages_ms"]["compute"] > 0 and r["stages_ms"]["preprocess"] > 0
            assert 0.0 < r["map"] <= 1.0 and r["ap50"] >= r["map"]
        assert rows[(b, "fp32")]["map"] > 0.5
        assert rows[(b, "int8+fp16+pm")]["status"] == "None" and rows[(b, "int8+fp16+pm")]["why"]
        for prec in ("int8", "bf16") if bf16 else ("int8",):  # saved once, as the tables read it
            r, base = rows[(b, prec)], rows[(b, "fp32")]
            if r["status"] == "ok":
                assert r["speedup"]["runtime"] == pytest.approx(base["runtime_ms"]["mean"] / r["runtime_ms"]["mean"],
                                                                rel=1e-3)
                assert r["speedup"]["end2end"] > 0
    # each backend runs the INT8 artifact it runs best, and the row says which
    kinds = {b: rows[(b, "int8")]["int8_artifact"]["kind"] for b in ("ort", "openvino", "paddle")}
    assert kinds == {"ort": "ort-qdq", "openvino": "paddle-program", "paddle": "paddle-program"}
    # the same model on three backends gives the same mAP on the 200 val images: FP32 (outputs equal to 1e-3 px:
    # within a point), and INT8 (PaddleSlim's program on Paddle and OpenVINO, ONNX Runtime's own quantization on
    # ORT), each measured within half a point of FP32 on these 200 images (docs/performance.md: 0.586-0.590 on
    # AVX2 and AMX, FP32 0.591), so within one point of each other
    for prec, tol in (("fp32", 0.01), ("int8", 0.01)):
        maps = [rows[(b, prec)]["map"] for b in ("ort", "openvino", "paddle")]
        assert max(maps) - min(maps) < tol, (prec, maps)
    assert all(r["status"] == "skipped" and r["why"] for (b, _), r in rows.items() if b in ("trt", "paddle-trt"))
    assert set(report["per_class_delta"]) == {"ort", "openvino", "paddle"}
    rec = report["recommendation"]
    assert rec["backend"] in ("ort", "openvino", "paddle") and rec["precision"] in ("fp32", "int8", "bf16")
    assert rec["max_map_drop_points"] == settings.max_map_drop == 0.5
    _recommendation_follows_its_rule(report)
    names = sorted(p.name for p in typed.files)
    assert names == ["latency_vs_map.png", "report.csv", "report.json", "report.md"]
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {"rows", "settings", "machine", "versions"} <= set(data)
    assert BenchReport.from_dict(data).as_dict() == data  # report.json read back as it was written
    assert BenchReport.from_dict(data).rows[0].spec is BACKENDS[data["rows"][0]["backend"]]
    assert "Runtime Benchmark" in (tmp_path / "rep" / "report.md").read_text()
    ort = [row for row in table_rows(typed, "runtime_ms") if row[0] == "ort"][0]
    assert ort[4] == "None" and ort[6].endswith("x") and ort[10] == "PTQ (ORT) · ORT-quantized ONNX"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Recommendation" in md
    assert "- ort int8+fp16: None: ONNX Runtime's CPU provider has no bf16/fp16" in md  # the reason behind each None


def _recommendation_follows_its_rule(report):
    """The rule, applied to every row that ran, whatever was recommended: a row qualifies when it is FP32 or its
    mAP is within max_map_drop points of its backend's FP32; the recommended row qualifies and no qualifying row
    is faster by more than AS_FAST (BF16 may be preferred to an INT8 row up to that). The saved means are
    compared, whichever they are: no timing is asserted."""
    from fastdet_cli.bench.verdicts import AS_FAST

    rec, rows = report["recommendation"], {(r["backend"], r["precision"]): r for r in report["rows"]}
    key = "end2end_ms" if rec["latency"] == "end-to-end" else "runtime_ms"

    def qualifies(r):
        return r["precision"] == "fp32" or (r["map"] is not None and 100 * (
            rows[(r["backend"], "fp32")]["map"] - r["map"]) <= rec["max_map_drop_points"])

    ran = [r for r in rows.values() if r["status"] == "ok"]
    assert sum(r["precision"] != "fp32" for r in ran) >= 3  # the INT8 rows at least: the rule had rows to judge
    chosen = rows[(rec["backend"], rec["precision"])]
    assert qualifies(chosen), chosen
    fastest = min(r[key]["mean"] for r in ran if qualifies(r))
    assert chosen[key]["mean"] <= AS_FAST * fastest, (chosen[key], fastest)


def _row(backend, precision, ms, map_):
    return Row(BACKENDS[backend], precision, runtime_ms={"mean": ms}, end2end_ms={"mean": ms + 1}, map=map_,
               int8_artifact={"method": "PTQ", "path": "/q", "kind": "paddle-program"}
               if precision not in ("fp32", "bf16") else None)


def _recommend(rows, bound):
    from fastdet_cli.bench.verdicts import recommend, set_speedups

    set_speedups(rows)
    return recommend(rows, bound)


def test_recommendation_is_the_fastest_row_within_the_map_bound():
    rows = [_row("ort", "fp32", 10, 0.58), _row("ort", "int8", 5, 0.570),  # fastest, but 1 point lost
            _row("openvino", "fp32", 9, 0.58), _row("openvino", "int8", 6, 0.577)]
    rec = _recommend(rows, 0.5)
    assert (rec.backend, rec.precision, rec.latency) == ("openvino", "int8", "end-to-end")
    assert "1.43x its FP32" in rec.text
    assert rows[3].speedup == {"runtime": 1.5, "end2end": pytest.approx(10 / 7, abs=1e-4)}
    assert _recommend(rows, 2.0).backend == "ort"
    slow = [_row("ort", "fp32", 10, 0.58), _row("ort", "int8", 12, 0.58)]
    assert _recommend(slow, 0.5).precision == "fp32" and "INT8 does not pay" in _recommend(slow, 0.5).text


@pytest.mark.paddle
def test_fp32_model_given_as_int8_is_refused():
    with pytest.raises(FastdetError, match="not a quantized model"):
        api.bench(BenchSettings(int8_models=("default",), backends=("ort",), repeat=1, warmup=0), log=lambda m: None)


def test_named_backends_that_cannot_run_are_skipped_rows(tmp_path):
    """`bench --backend trt,paddle-trt,ort-gpu,ort` on a machine without a GPU: a report with skipped rows for the
    GPU backends and exit 0 (benchmarks/gpu_check.sh relies on it); exit 1 only when no row ran."""
    from fastdet_cli.cli import main
    from fastdet_cli.runtime.registry import cuda_device_count

    if cuda_device_count():
        pytest.skip("a GPU is visible")
    args = ["bench", "--no-eval", "--no-int8", "--repeat", "3", "--warmup", "1"]
    assert main(args + ["--backend", "trt,paddle-trt,ort-gpu,ort", "--report", str(tmp_path / "r")]) == 0
    rows = {r["backend"]: r for r in json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
            if r["precision"] == "fp32"}
    assert rows["trt"]["status"] == rows["paddle-trt"]["status"] == rows["ort-gpu"]["status"] == "skipped"
    assert rows["ort"]["status"] == "ok"
    assert "GPU" in rows["paddle-trt"]["why"] or "not installed" in rows["paddle-trt"]["why"]
    assert main(args + ["--backend", "trt", "--no-end2end"]) == 1
    assert main(args + ["--backend", "ort-gpu", "--no-end2end"]) == 1


def test_int8_verdicts_follow_the_saved_speedup():
    """Only a backend whose INT8 row is not faster than its FP32 row gets a verdict (Paddle: no per-op profile,
    so the verdict says that without profiling)."""
    from fastdet_cli.bench.verdicts import int8_verdicts, set_speedups

    rows = [_row("paddle", "fp32", 10, 0.58), _row("paddle", "int8", 12, 0.58),
            _row("ort", "fp32", 10, 0.58), _row("ort", "int8", 5, 0.58)]
    set_speedups(rows)
    said = []
    verdicts = int8_verdicts(rows, 1, said.append)
    assert list(verdicts) == ["paddle"] and "no per-op profile" in verdicts["paddle"][0] and not said


def test_a_failing_reference_or_diff_never_fails_a_measured_bench(tmp_path, monkeypatch, capsys, val_dataset):
    """The agreement reference (FP32 detections on an image folder) and the diff images after the report are
    extras: when they fail, the rows are still timed, the report written, the exit code 0, and the log says why."""
    import shutil

    import fastdet_cli.agreement as agreement
    from fastdet_cli.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for _, p in val_dataset.image_paths(limit=2):
        shutil.copy(p, images / p.name)

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(agreement, "with_reference", broken)
    monkeypatch.setenv("COLUMNS", "250")
    args = ["bench", "--no-int8", "-b", "ort", "--repeat", "2", "--warmup", "1", "--no-end2end", "--no-bf16",
            "--dataset", str(images), "--report", str(tmp_path / "r")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "no agreement mAP (RuntimeError: disk full)" in out
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    assert rows[0]["status"] == "ok" and rows[0]["map"] is None


@pytest.mark.paddle
def test_failing_diff_images_after_the_report_keep_exit_0(default_artifacts, tmp_path, monkeypatch, capsys):
    import fastdet_cli.diff as diff
    from fastdet_cli.cli import main

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(diff, "diff_models", broken)
    monkeypatch.setenv("COLUMNS", "250")
    args = ["bench", "-b", "ort", "--repeat", "2", "--warmup", "1", "--no-end2end", "--no-bf16", "--eval-limit", "5",
            "--report", str(tmp_path / "r")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "no FP32 vs INT8 images (RuntimeError: disk full)" in out
    notes = json.loads((tmp_path / "r" / "report.json").read_text())["notes"]  # the report says it too
    assert any("RuntimeError: disk full" in n for n in notes)


def test_time_bound_ends_the_loops_and_the_report_says_so():
    """--time: a loop stops at its repeat count or its seconds, whichever first; warm-up at its count or a fifth of
    the seconds; progress still hears the full total; each row says which bound ended it."""
    import time

    from fastdet_cli.bench.latency import time_calls

    calls, heard = [], []
    out = time_calls(lambda: (calls.append(1), time.sleep(0.005)), warmup=1000, repeat=100000,
                     progress=heard.append, seconds=0.1)
    assert 1 <= len(out) < 100000 and sum(out) >= 0.1 and sum(out[:-1]) < 0.1  # stopped by the time, just after it
    assert len(calls) - len(out) < 1000  # the warm-up stopped by its share of the time too
    assert sum(heard) == 1000 + 100000
    assert len(time_calls(lambda: None, warmup=2, repeat=7, seconds=60.0)) == 7  # the repeat count first
    typed = api.bench(BenchSettings(backends=("ort",), int8=False, bf16=False, repeat=100000, warmup=3,
                                    time_limit=0.2, eval=False), log=lambda m: None)
    row = typed.as_dict()["rows"][0]
    assert row["stopped_by"] == {"runtime": "time (0.2 s)", "end2end": "time (0.2 s)"}
    assert 1 <= row["runtime_ms"]["n"] < 100000 and row["end2end_ms"]["n"] < 100000
    assert row["stages_ms"]["compute"] > 0  # per end-to-end run actually made
    from fastdet_cli.render.bench import caption

    assert "at most 100000 runs or 0.2 s per row" in caption(typed)


def test_a_model_without_int8_gets_fp32_rows_and_says_why_int8_is_none():
    """`bench --model MY_MODEL` without --int8-model: the FP32 rows are measured, the INT8 cells say what to give."""
    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.bench.run import NO_INT8
    from fastdet_cli.det.model import resolve_model

    said = []
    model = str(onnx_for(resolve_model("default")).path)
    report = api.bench(BenchSettings(model=model, backends=("ort",), bf16=False, repeat=2, warmup=1, eval=False,
                                     end2end=False), log=said.append).as_dict()
    rows = {r["precision"]: r for r in report["rows"]}
    assert rows["fp32"]["status"] == "ok" and rows["int8"]["status"] == "None" and rows["int8"]["why"] == NO_INT8
    assert any(NO_INT8 in line for line in said)
    assert report["recommendation"]["text"].endswith("the fastest backend; no INT8 or BF16 row ran")
