"""docs/cli.md, generated from the Typer app so that it cannot drift from the code: every command with its help
and a table of its arguments and options (option, default, meaning).

    python -m fastdet_cli.cli_reference > docs/cli.md      (make docs; tests/test_docs.py compares)
"""
from __future__ import annotations

import sys

HEADER = """# Command reference

Generated from the command-line app by `make docs` (`python -m fastdet_cli.cli_reference`); a test fails when
it differs from the code. `--help` after any command prints the same. The README has the two setup commands and the
own-model steps; docs/bench.md, docs/compress.md and docs/api.md say what the commands do in depth.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param) -> str:
    if getattr(param, "is_flag", False):
        return "auto (see meaning)" if param.default is None else "on" if param.default else "off"
    d = param.default
    if d is None or d == () or callable(d):
        return "—" if not param.required else "required"
    if isinstance(d, (list, tuple)):
        d = ", ".join(map(str, d))
    return f"`{d}`"


def _rows(command) -> list[str]:
    from typer.core import TyperArgument, TyperOption

    rows = []
    for p in command.params:
        if isinstance(p, TyperArgument):
            name = f"`{(p.metavar or p.name).upper()}`" + ("" if p.required else " (optional)")
            rows.append(f"| {name} | {_default(p)} | {_cell(getattr(p, 'help', '') or '')} |")
        elif isinstance(p, TyperOption) and not p.hidden and "--help" not in p.opts:
            names = ", ".join(f"`{o}`" for o in sorted(p.opts + p.secondary_opts, key=lambda o: not o.startswith("--")))
            rows.append(f"| {names} | {_default(p)} | {_cell(p.help or '')} |")
    return rows


def _section(path: str, command) -> list[str]:
    group = hasattr(command, "commands")  # a group (report): its commands follow
    out = [f"## {path}" if group else f"## `{path}`", "", _cell(command.help or "").strip(), ""]
    rows = _rows(command)
    if rows:
        out += ["| argument / option | default | meaning |", "|---|---|---|", *rows, ""]
    if group:
        for name in sorted(command.commands):
            out += _section(f"{path} {name}", command.commands[name])
    return out


def markdown() -> str:
    """The reference as Markdown."""
    import typer

    from fastdet_cli.cli import app

    root = typer.main.get_command(app)
    lines = [HEADER, "## `fastdet`", "", _cell(root.help or ""), "",
             "| option | default | meaning |", "|---|---|---|", *_rows(root), ""]
    for name in sorted(root.commands):
        lines += _section(f"fastdet {name}", root.commands[name])
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
