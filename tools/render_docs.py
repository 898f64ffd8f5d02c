"""Figures from one place: every table of figures in README.md and docs/*.md sits between two markers,

    <!-- results: docs/results/NAME.json (a note on how it is rendered) -->
    | the table, written by this script |
    <!-- /results -->

and this script writes the text between them from the results file named; tests/test_docs.py renders every marked
table and compares, and finds tables of figures outside any marker. A results file is one of:
- a generic table of figures, schema `fastdet-doc-table/1` (`doc_table`): which run (date, CPU, CPU flags,
  versions, command — each as the docs state it, or null), where the figures come from (`provenance`: most were
  transcribed from the docs, their run's own report not kept), then `columns` and `rows` of cells as shown;
- bench's own report.json (schema `fastdet-bench/…`) kept with keys naming its run (script, date, command, commit,
  commit_note, copied_from), rendered by fastdet_cli.render.bench like `fastdet bench`'s report.md
  (`bench_results_table`; `view=runtime` in the marker: the runtime table alone);
- a benchmark script's own results file (a `script` key): that script's `table` function renders it.

    python tools/render_docs.py            # rewrite every marked table from its results file
    python tools/render_docs.py --check    # list the tables that differ; exit 1 when any does
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a block's text may be empty (a new marker pair) and never runs into the next block's marker
RESULTS_BLOCK = re.compile(r"<!-- results: (\S+)([^\n]*)-->\n(?:((?:(?!<!-- results:).)*?)\n)??<!-- /results -->",
                           re.S)
DOC_TABLE = "fastdet-doc-table/1"
DOC_TABLE_KEYS = {"schema", "title", "date", "cpu", "flags", "versions", "command", "provenance", "columns", "rows"}


def docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def md_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def check_doc_table(data: dict, name: str) -> None:
    """A `fastdet-doc-table/1` file holds every key, says where its figures come from, and each row has a cell
    per column; raises ValueError naming the file and what is wrong."""
    missing = DOC_TABLE_KEYS - set(data)
    if missing:
        raise ValueError(f"{name}: missing {sorted(missing)}")
    dates = data["date"] if isinstance(data["date"], list) else [data["date"]]
    if not dates or not all(isinstance(d, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in dates):
        raise ValueError(f"{name}: date must be YYYY-MM-DD (or a list of them, one per machine): {data['date']!r}")
    if not str(data["provenance"]).strip() or not data["cpu"] or not data["flags"]:
        raise ValueError(f"{name}: provenance, cpu and flags must be given")
    width = len(data["columns"])
    for i, row in enumerate(data["rows"]):
        if len(row) != width or not all(isinstance(c, str) for c in row):
            raise ValueError(f"{name}: row {i} has {len(row)} cells for {width} columns (all strings)")


def doc_table(data: dict) -> str:
    """A `fastdet-doc-table/1` results file as the docs show it: the Markdown table of its columns and rows."""
    check_doc_table(data, data.get("title", "a doc table"))
    return md_table(data["columns"], data["rows"])


def bench_results_table(results: dict, view: str = "all") -> str:
    """A bench report kept as a results file (report.json, schema fastdet-bench/…, plus keys naming the run: script,
    date, command, commit, commit_note, copied_from) as the docs show it: which run, bench's own runtime table and
    None reasons, and the kernels each row ran, all formatted by fastdet_cli.render.bench (the same code as
    `fastdet bench`'s report.md). `view="runtime"`: bench's runtime table alone."""
    from fastdet_cli.bench.report import BenchReport
    from fastdet_cli.render import bench as render

    report = BenchReport.from_dict(results, "the results file")
    runtime = md_table(render.header(report), render.table_rows(report, "runtime_ms"))
    if view == "runtime":
        return runtime
    parts = [f"{results['date']}, `{results['command']}` (commit {results['commit']}); {render.caption(report)}. "
             f"Runtime: {report.settings['runtime_includes']}.", runtime]
    notes = render.status_notes(report) + render.fp32_notes(report)
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes))
    if render.kernel_rows(report):
        parts.append(md_table(render.kernel_header(report), render.kernel_rows(report)))
    return "\n\n".join(parts)


def _script_table(results: dict):
    script = ROOT / results["script"]
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.table


def render(path: str, marker_note: str = "") -> str:
    """The table the docs show for results file `path` (relative to the project), `marker_note` the rest of its
    marker (which may say `view=runtime`)."""
    data = json.loads((ROOT / path).read_text(encoding="utf-8"))
    schema = str(data.get("schema", ""))
    if schema == DOC_TABLE:
        return doc_table(data)
    if schema.startswith("fastdet-bench/"):
        view = re.search(r"\bview=(\w+)", marker_note)
        return bench_results_table(data, view.group(1) if view else "all")
    if "script" in data:
        return _script_table(data)(data)
    raise ValueError(f"{path}: neither a {DOC_TABLE} file, a bench report nor a benchmark script's results")


def rewrite(text: str) -> str:
    """`text` with every marked table written again from its results file."""
    def one(m: re.Match) -> str:
        return f"<!-- results: {m.group(1)}{m.group(2)}-->\n{render(m.group(1), m.group(2)).strip()}\n<!-- /results -->"

    return RESULTS_BLOCK.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only list the docs whose tables differ; exit 1 if any")
    args = ap.parse_args(argv)
    stale = []
    for doc in docs():
        text = doc.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            stale.append(doc.relative_to(ROOT))
            if not args.check:
                doc.write_text(new, encoding="utf-8")
    verb = "differ from their results files" if args.check else "rewritten from their results files"
    print(f"{', '.join(map(str, stale))}: tables {verb}" if stale else "every marked table matches its results file")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
