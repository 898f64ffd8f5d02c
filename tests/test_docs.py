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


RESULTS_BLOCK = re.compile(r"<!-- results: (\S+)[^\n]*-->\n(.*?)\n<!-- /results -->", re.S)


def bench_results_table(results: dict) -> str:
    """A bench report kept as a results file (report.json, schema fastdet-bench/…, plus keys naming the run: script,
    date, command, commit, commit_note, copied_from) as the docs show it: which run, bench's own runtime table and
    None reasons, and the kernels each row ran, all formatted by fastdet_cli.render.bench (the same code as
    `fastdet bench`'s report.md)."""
    from fastdet_cli.bench.report import BenchReport
    from fastdet_cli.render import bench as render

    report = BenchReport.from_dict(results, "the results file")

    def md_table(head, rows):
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                          *("| " + " | ".join(r) + " |" for r in rows)])

    parts = [f"{results['date']}, `{results['command']}` (commit {results['commit']}); {render.caption(report)}. "
             f"Runtime: {report.settings['runtime_includes']}.",
             md_table(render.header(report), render.table_rows(report, "runtime_ms"))]
    notes = render.status_notes(report) + render.fp32_notes(report)
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes))
    if render.kernel_rows(report):
        parts.append(md_table(render.kernel_header(report), render.kernel_rows(report)))
    return "\n\n".join(parts)


def _renderer(results: Path):
    """`table` of the benchmark script that wrote `results` (its `script` field); a bench report kept as a results
    file is rendered by `bench_results_table`."""
    import importlib.util

    if str(json.loads(results.read_text()).get("schema", "")).startswith("fastdet-bench/"):
        return bench_results_table
    script = ROOT / json.loads(results.read_text())["script"]
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.table


def test_tables_naming_a_results_file_are_rendered_from_it():
    """A figure table in docs/ that names a docs/results/*.json file is exactly what its benchmark script renders
    from that file: figures come from one place."""
    blocks = [(doc, m) for doc in (ROOT / "docs").glob("*.md") for m in RESULTS_BLOCK.finditer(doc.read_text())]
    assert blocks, "no docs table names a results file"
    for doc, m in blocks:
        results = ROOT / m.group(1)
        assert results.is_file(), f"{doc.name} names {m.group(1)}, which is not there"
        want = _renderer(results)(json.loads(results.read_text()))
        assert m.group(2).strip() == want.strip(), \
            f"{doc.name}: the table differs from {m.group(1)}; re-render it. It renders as:\n{want}"
    for results in (ROOT / "docs" / "results").glob("*.json"):
        data = json.loads(results.read_text())
        assert {"script", "date", "command", "machine", "versions", "rows"} <= set(data), results.name


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
