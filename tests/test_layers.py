"""Imports point down: the library never reaches up into the command layer."""
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fastdet_cli"


def test_nothing_below_commands_imports_them():
    offenders = []
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG)
        if rel.parts[0] == "commands" or rel.name in ("cli.py", "__main__.py"):  # the entry points
            continue
        if re.search(r"^\s*(from|import)\s+fastdet_cli\.(commands|cli)\b", f.read_text(), re.M):
            offenders.append(str(rel))
    assert offenders == []


def test_bench_report_imports_run_never_the_reverse():
    assert "fastdet_cli.bench.report" not in (PKG / "bench" / "run.py").read_text()
