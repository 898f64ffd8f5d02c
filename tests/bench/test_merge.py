"""`fastdet report merge`: reports from two (simulated) machines → one table with a hardware column."""
import json

import pytest
from typer.testing import CliRunner

from fastdet_cli import api
from fastdet_cli.bench.merge import merge_reports
from fastdet_cli.bench.report import BenchReport
from fastdet_cli.bench.run import BenchSettings
from fastdet_cli.render.bench import table_rows, write_report
from fastdet_cli.cli import app, main
from fastdet_cli.errors import FastdetError


@pytest.fixture(scope="module")
def two_reports(tmp_path_factory):
    """A real (tiny) bench run written as machine A's report, and machine B's: a VNNI CPU with a GPU, run with 4
    threads (machine and settings edited; the rows are real measurements)."""
    root = tmp_path_factory.mktemp("reports")
    report = api.bench(BenchSettings(backends=("ort",), int8=False, repeat=3, warmup=1, eval_limit=4),
                       log=lambda m: None, report_dir=root / "a").as_dict()
    other = json.loads(json.dumps(report))
    other["machine"].update({"cpu": "Intel(R) Xeon(R) Gold 6271C", "cpu flags": "avx2 avx512f avx512_vnni",
                             "gpu": "Tesla T4", "nvidia driver": "535.54.03"})
    other["settings"]["threads"] = 4
    (root / "b").mkdir()
    (root / "b" / "report.json").write_text(json.dumps(other))
    return root / "a", root / "b" / "report.json"


def test_merge_has_both_machines_and_flags_differing_settings(two_reports, tmp_path):
    typed = merge_reports(list(two_reports))
    merged = typed.as_dict()
    assert BenchReport.from_dict(merged).as_dict() == merged  # a merged report round-trips like a single one
    hardware = {r["hardware"] for r in merged["rows"]}
    assert len(hardware) == 2 and any("avx512_vnni" in h and "Tesla T4, driver 535.54.03" in h for h in hardware)
    assert merged["settings"]["differing"] == {"threads": ["1", "4"]}
    assert {r["settings_note"] for r in merged["rows"]} == {"threads=1", "threads=4"}
    assert all(r["versions"].startswith("fastdet ") and "onnxruntime" in r["versions"] for r in merged["rows"])
    rows = table_rows(typed, "runtime_ms")
    assert len(rows) == 2 and all(r[1] == "ort" and r[-1].startswith("threads=") for r in rows)
    files = write_report(typed, tmp_path / "m")
    assert {p.name for p in files} >= {"report.json", "report.csv", "report.md"}
    md = (tmp_path / "m" / "report.md").read_text()
    assert "| hardware | backend |" in md and "settings differ between reports (threads: 1 vs 4)" in md
    csv_lines = (tmp_path / "m" / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(merged["rows"]) and "Tesla T4" in "\n".join(csv_lines)
    # the merged report is itself a bench report: it can be merged again with a third machine's
    assert json.loads((tmp_path / "m" / "report.json").read_text())["schema"] == "fastdet-bench/2"


def test_merge_cli_prints_and_writes(two_reports, tmp_path):
    res = CliRunner().invoke(app, ["report", "merge", str(two_reports[0]), str(two_reports[1]),
                                   "--out", str(tmp_path / "out")], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    assert "hardware" in res.output and "Tesla T4" in res.output and (tmp_path / "out" / "report.md").exists()


def test_merge_errors(two_reports, tmp_path, capsys):
    a, b = two_reports
    with pytest.raises(FastdetError, match="duplicate row ort fp32"):
        dup = tmp_path / "dup.json"
        dup.write_text((a / "report.json").read_text())
        merge_reports([a, dup])
    with pytest.raises(FastdetError, match="given twice"):
        merge_reports([a, a / "report.json"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "something-else/2", "rows": []}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for spec, words in ((bad, "is not 'fastdet-bench/2'"), (broken, "not a readable JSON"),
                        (tmp_path / "none", "no bench report")):
        assert main(["report", "merge", str(a), str(spec), "--out", str(tmp_path / "o")]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
