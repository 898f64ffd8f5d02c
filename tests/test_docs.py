"""The docs' commands cannot rot: every `fastdet …` command in README.md and docs/*.md (fenced code blocks and
inline code) names a subcommand that exists and only options its --help lists; `--version` and every --help
run; every shipped compression config loads. Cheap (help texts and YAML only): a few seconds."""
from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fastdet_cli.cli import app
from fastdet_cli.compress.config import load_compress_config
from fastdet_cli.paths import PACKAGE_DIR

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = sorted([*(PACKAGE_DIR / "configs").glob("*.yaml"), *(ROOT / "configs").glob("*.yaml")])
GLOBAL_OPTIONS = {"--debug", "--version", "--help", "-h"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")  # may span a line break, as Markdown allows
OPTION = re.compile(r"^--?[A-Za-z][\w-]*$")


def _group() -> typer.core.TyperGroup:
    return typer.main.get_command(app)


def _subcommands() -> dict[str, list[str]]:
    """Command path (e.g. 'bench', 'report merge') → argv prefix."""
    out = {}
    for name, cmd in _group().commands.items():
        if getattr(cmd, "commands", None):  # a group: `fastdet report merge`
            for sub in cmd.commands:
                out[f"{name} {sub}"] = [name, sub]
        else:
            out[name] = [name]
    return out


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


@cache
def _help(path: str) -> str:
    result = _invoke([*path.split(), "--help"])
    assert result.exit_code == 0, (path, result.output)
    return result.output


def _commands_in(text: str) -> list[str]:
    """The text after `fastdet` of every command in fenced code and inline code (a `fastdet` word, then a space),
    and inline code that starts with a subcommand and uses an option (`bench --report DIR`)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = re.sub(r"\s#.*$", "", line)  # a shell comment
            m = re.search(r"(?:^|[\s/])fastdet\s+(\S.*)$", line)
            if m:
                found.append(m.group(1))
    prose = FENCE.sub("", text)
    names = {path.split()[0] for path in _subcommands()}
    for span in INLINE.findall(prose):
        span = span.replace("\n", " ").strip()
        m = re.match(r"(?:\S*/)?fastdet\s+(\S.*)$", span)
        if m:
            found.append(m.group(1))
        elif span and span.split()[0] in names and any(OPTION.match(w) for w in _tokens(span)):  # `bench --report`
            found.append(span)
    return found


def _tokens(command: str) -> list[str]:
    """Words of a command as written in Markdown: table escapes (`\\|`), alternatives (`a|b`, `--x/--no-x`) and
    brackets split apart; `--opt=value` keeps the option."""
    words = re.split(r"[\s\[\]()|/,]+", command.replace("\\|", " "))
    return [w.split("=", 1)[0].rstrip(".:;…") for w in words if w]


def _resolve(command: str) -> tuple[str | None, list[str]]:
    """(subcommand path or None for `fastdet --version`-style lines, the option words used)."""
    words = _tokens(command)
    while words and words[0] in GLOBAL_OPTIONS:
        words = words[1:]
    if not words:
        return None, []
    subs = _subcommands()
    path = " ".join(words[:2]) if " ".join(words[:2]) in subs else words[0]
    if path not in subs:
        raise AssertionError(f"`fastdet {command}`: no subcommand '{words[0]}' (fastdet has {', '.join(subs)})")
    return path, [w for w in words[len(path.split()):] if OPTION.match(w)]


DOC_COMMANDS = [(doc, cmd) for doc in DOCS for cmd in _commands_in(doc.read_text(encoding="utf-8"))]


def test_the_docs_hold_commands():
    """The collector finds them (a broken pattern would make every other test here vacuous)."""
    by_doc = {d.name: sum(1 for dd, _ in DOC_COMMANDS if dd == d) for d in DOCS}
    assert by_doc["README.md"] >= 8 and by_doc["bench.md"] >= 4 and by_doc["compress.md"] >= 5, by_doc
    assert _resolve("compress CONFIG.yaml [--method ptq\\|qat] [--save-dir DIR]") == ("compress",
                                                                                    ["--method", "--save-dir"])
    assert _resolve("report merge a/ b/report.json --out merged/") == ("report merge", ["--out"])
    assert _resolve("export --remove-nms/--keep-nms --weight-bits 7|8")[1] == ["--remove-nms", "--keep-nms",
                                                                                 "--weight-bits"]


@pytest.mark.parametrize("doc,command", DOC_COMMANDS,
                         ids=[f"{d.name}:{c[:60]}" for d, c in DOC_COMMANDS])
def test_doc_command_options_exist(doc, command):
    path, options = _resolve(command)
    if path is None:
        return
    text = _help(path)
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]
    assert not missing, f"{doc.name}: `fastdet {command}` uses {missing}, not in `fastdet {path} --help`"


def test_version():
    result = _invoke(["--version"])
    assert result.exit_code == 0 and re.match(r"fastdet \S+", result.output)


@pytest.mark.parametrize("path", sorted(_subcommands()))
def test_every_help_runs(path):
    text = _help(path)
    assert f"fastdet {path}" in text  # the usage line


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_loads(config):
    """Loading checks keys and types only: configs/real_layout.yaml's ../shared paths need not exist here."""
    cfg = load_compress_config(config)
    assert cfg.model_dir and cfg.method_hint in ("ptq", "qat")
    if cfg.format == "onnx":
        assert cfg.engine in ("onnxruntime", "paddleslim")


def test_the_plot_extra_is_documented_and_its_absence_reported(tmp_path, monkeypatch):
    """Without matplotlib (the `plot` extra) report.md says the PNG was not written, in the words docs/bench.md
    quotes; the README's extras list names the extra."""
    from fastdet_cli.bench.report import BenchReport
    from fastdet_cli.render import bench as rep

    empty = BenchReport({}, {}, {}, [])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert rep.plot_png(empty) is None
    monkeypatch.setattr(rep, "markdown", lambda report: "# fastdet bench\n")
    monkeypatch.setattr(rep, "csv_text", lambda report: "backend\n")
    files = rep.write_report(empty, tmp_path)
    assert sorted(p.name for p in files) == ["report.csv", "report.json", "report.md"]
    assert (tmp_path / "report.md").read_text().splitlines()[-1] == rep.PLOT_MISSING
    assert rep.PLOT_MISSING in " ".join((ROOT / "docs" / "bench.md").read_text(encoding="utf-8").split())
    assert "`[plot]`" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_cli_reference_is_generated_from_the_app():
    """docs/cli.md is the Typer app's own description (`make docs`): a changed option or help text fails here."""
    from fastdet_cli.cli_reference import markdown

    text = markdown()
    assert (ROOT / "docs" / "cli.md").read_text() == text, "docs/cli.md is out of date: run `make docs`"
    for command in ("bench", "compress", "diff", "env", "eval", "export", "fetch", "infer", "inspect", "report merge"):
        assert f"## `fastdet {command}`" in text
    assert "| `--time` | — |" in text and "| `--repeat` | `1000` |" in text


GLOSSARY_TERMS = ("NMS", "Deploy config", "Fake quantization", "QLinearConv", "oneDNN", "VNNI", "AMX",
                  "Calibration methods", "Per-channel", "reduce_range", "zero point", "INT8 artifact kinds",
                  "Raw heads", "Hard-swish", "paddle2onnx", '"met": false', "Rounding spread", "PACT", "soft_label",
                  "AP50", "Agreement mAP", "Sensitivity search")


def test_glossary_defines_the_terms_the_docs_use():
    text = (ROOT / "docs" / "glossary.md").read_text()
    heads = [line for line in text.splitlines() if line.startswith("**")]
    missing = [t for t in GLOSSARY_TERMS if not any(t.lower() in h.lower() for h in heads)]
    assert not missing, f"docs/glossary.md defines no entry for: {missing}"


def test_compress_doc_lists_every_key_the_loader_accepts():
    from fastdet_cli.compress.config import SCHEMA

    text = (ROOT / "docs" / "compress.md").read_text()
    table = text[text.index("### Every key"):]
    table = table[:table.index("\n\n## ")]
    missing = [f"{section}.{key}" for section, keys in SCHEMA.items() if section != "Quantization"
               for key in keys if f"`{section}.{key}`" not in table]
    assert not missing, f"docs/compress.md's key table misses {missing}"


@cache
def _render_docs():
    """tools/render_docs.py (not a package): the one renderer of the docs' tables of figures."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "tools" / "render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


FIX = "run `make docs` (or `python tools/render_docs.py`) to write it again from its results file"


def test_tables_naming_a_results_file_are_rendered_from_it():
    """A table of figures in README.md or docs/ that names a docs/results/*.json file is exactly what
    tools/render_docs.py renders from that file (a doc table, a bench report, or a benchmark script's own results):
    figures come from one place."""
    rd = _render_docs()
    blocks = [(doc, m) for doc in DOCS for m in rd.RESULTS_BLOCK.finditer(doc.read_text(encoding="utf-8"))]
    assert len(blocks) >= 25, "the docs' tables of figures are not marked with their results files"
    for doc, m in blocks:
        where = f"{doc.relative_to(ROOT)}:{_line(m.string, m.start())}"
        assert (ROOT / m.group(1)).is_file(), f"{where} names {m.group(1)}, which is not there"
        want = rd.render(m.group(1), m.group(2))
        assert (m.group(3) or "").strip() == want.strip(), \
            f"{where}: the table differs from {m.group(1)}; {FIX}. It renders as:\n{want}"
    named = {m.group(1) for _, m in blocks}
    for results in sorted((ROOT / "docs" / "results").glob("*.json")):
        rel = str(results.relative_to(ROOT))
        assert rel in named, f"{rel} is shown by no docs table (a results file belongs to a marked table)"
        data = json.loads(results.read_text(encoding="utf-8"))
        if data.get("schema") == rd.DOC_TABLE:
            rd.check_doc_table(data, rel)
            assert "0eef77b" in data["provenance"] or "measured" in data["provenance"], rel
        else:
            assert {"script", "date", "command", "machine", "versions", "rows"} <= set(data), rel


def test_doc_tables_say_where_their_figures_come_from():
    """Transcribed tables say so: their run's own report was not kept, and nothing was measured again."""
    rd = _render_docs()
    doc_tables = [p for p in (ROOT / "docs" / "results").glob("*.json")
                  if json.loads(p.read_text(encoding="utf-8")).get("schema") == rd.DOC_TABLE]
    assert len(doc_tables) >= 20
    for path in doc_tables:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["provenance"].startswith("transcribed"):
            assert "not kept" in data["provenance"], path.name
        assert all(d in path.name for d in (data["date"] if isinstance(data["date"], list) else [data["date"]])), \
            f"{path.name}: the file name carries its date(s)"
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        rd.check_doc_table({**json.loads(doc_tables[0].read_text()), "columns": ["a", "b"], "rows": [["1"]]}, "x")


# A table of figures: a body cell (inline code aside) holds a decimal number, a number with a unit, or only a
# number. Tables that match but are not measurements are listed below by their header row; docs/cli.md is the
# generated option reference (its defaults are numbers).
FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|s|min|×|x|%|MB|GB)(?![\w])|(?<![\w.])\d+\.\d+(?![\w.])"
                    r"|^\s*\d+\s*$")
NOT_MEASUREMENTS = {
    ("docs/compress.md", "| key | what it does |"): "every key the config loader accepts (defaults such as 0.9999)",
    ("docs/bench.md", "| backend | preference | why |"): "which INT8 artifact each backend prefers; the figures "
                                                        "it quotes name their results file",
    ("docs/toolchain.md", "| what | AVX2 only | VNNI (AVX512-VNNI / AVX-VNNI / AMX-INT8) | why |"):
        "what depends on the CPU kind by design (weight bits 7 / 8)",
}
NOT_FIGURE_DOCS = {"docs/cli.md"}
TABLE = re.compile(r"^(\|[^\n]*\|)\n\|(?:\s*:?-+:?\s*\|)+\n((?:\|[^\n]*\|\n?)*)", re.M)


def _figure_tables(doc: Path) -> list[tuple[int, str, bool]]:
    """(line, header row, whether it is inside a results marker) of each table of figures in `doc`."""
    rd = _render_docs()
    text = doc.read_text(encoding="utf-8")
    marked = [(m.start(3), m.end(3)) for m in rd.RESULTS_BLOCK.finditer(text)]
    found = []
    for m in TABLE.finditer(text):
        cells = [c for row in m.group(2).splitlines() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        if any(FIGURE.search(re.sub(r"`[^`]*`", "", c)) for c in cells):
            inside = any(a <= m.start() and m.end(2) <= b + 1 for a, b in marked)
            found.append((_line(text, m.start()), m.group(1), inside))
    return found


def test_every_table_of_figures_is_rendered_from_a_results_file():
    """No table of measured figures outside a results marker: each is written by tools/render_docs.py from its
    docs/results/*.json file, so a figure has one place. The few tables of numbers that are not measurements are
    listed (NOT_MEASUREMENTS), and the list is checked against the docs so it cannot go stale."""
    loose, listed = [], set()
    for doc in DOCS:
        rel = str(doc.relative_to(ROOT))
        if rel in NOT_FIGURE_DOCS:
            continue
        for line, header, inside in _figure_tables(doc):
            if (rel, header) in NOT_MEASUREMENTS:
                listed.add((rel, header))
            elif not inside:
                loose.append(f"{rel}:{line}: {header[:80]}")
    assert not loose, ("tables of figures outside a results marker — put the figures in docs/results/NAME.json "
                       "(schema fastdet-doc-table/1: see tools/render_docs.py), mark the table with "
                       "`<!-- results: docs/results/NAME.json -->` … `<!-- /results -->`, and " + FIX +
                       "; or, if the numbers are not measurements, list the table in NOT_MEASUREMENTS:\n" +
                       "\n".join(loose))
    assert listed == set(NOT_MEASUREMENTS), f"NOT_MEASUREMENTS names tables the docs no longer have: " \
                                            f"{set(NOT_MEASUREMENTS) - listed}"


def test_the_figure_rule_finds_figures_and_not_prose():
    rows = ["| a | 12.5 ms |", "| b | 3× |", "| c | 2297 |", "| d | 57% |"]
    assert all(FIGURE.search(r.split("|")[2]) for r in rows)
    assert not any(FIGURE.search(c) for c in (" PTQ (ORT) · INT8 ONNX ", " avx512_vnni ", " FP32, INT8 ", " r525 "))


def test_bench_results_files_are_the_reports_bench_wrote():
    """A bench report kept under docs/results/ holds bench's report.json unchanged (it loads as one) plus the keys
    naming its run; where the original is in the repository (tests/recorded/), the figures are the same."""
    from fastdet_cli.bench.report import BenchReport

    kept = [p for p in (ROOT / "docs" / "results").glob("*.json")
            if str(json.loads(p.read_text()).get("schema", "")).startswith("fastdet-bench/")]
    assert kept, "no bench report under docs/results/"
    for path in kept:
        data = json.loads(path.read_text())
        assert data["script"] in data["command"] and re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["date"]), path.name
        assert data["date"] in path.name and data["commit"].split()[0] in path.name, path.name
        BenchReport.from_dict(data, path.name)
        source = ROOT / data["copied_from"].split(":")[0].split()[0]
        if source.is_file() and source.is_relative_to(ROOT / "tests"):  # build/ is scratch, not the repository
            original = json.loads(source.read_text())
            assert {k: data[k] for k in original} == original, f"{path.name} differs from {source.name}"
