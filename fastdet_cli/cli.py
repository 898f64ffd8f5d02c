"""The `fastdet` command. User errors (FastdetError) become one red line on stderr and exit code 2;
`--debug` shows the traceback. Anything else is a bug and shows its traceback.

Only typer and rich are imported here: each command imports its library code when it runs."""
from __future__ import annotations

import sys

import typer

from fastdet_cli.commands import bench as bench_cmd
from fastdet_cli.commands import compress as compress_cmd
from fastdet_cli.commands import diff as diff_cmd
from fastdet_cli.commands import env as env_cmd
from fastdet_cli.commands import evaluation as eval_cmd
from fastdet_cli.commands import export as export_cmd
from fastdet_cli.commands import fetch as fetch_cmd
from fastdet_cli.commands import infer as infer_cmd
from fastdet_cli.commands import inspection as inspect_cmd
from fastdet_cli.commands import report as report_cmd

app = typer.Typer(
    name="fastdet", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Take a PaddleDetection detector from FP32 to a quantized deployment, and prove what was gained.")

def _version(value: bool) -> None:
    if value:
        import importlib.metadata as md

        try:
            version = md.version("fastdet-cli")
        except md.PackageNotFoundError:  # run from a source tree that was not installed
            version = "unknown (not installed)"
        print(f"fastdet {version}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.", metavar=""),
          version: bool = typer.Option(False, "--version", help="Print fastdet's version and exit.", metavar="",
                                       callback=_version, is_eager=True)) -> None:
    pass  # --debug is read by `main` from the arguments before the command runs (its errors are shown whole)


app.command("compress", help=compress_cmd.__doc__)(compress_cmd.compress)
app.command("infer", help=infer_cmd.__doc__)(infer_cmd.infer)
app.command("export", help=export_cmd.__doc__)(export_cmd.export)
app.command("eval", help=eval_cmd.__doc__)(eval_cmd.evaluate)
app.command("fetch", help=fetch_cmd.__doc__)(fetch_cmd.fetch)
app.command("bench", help=bench_cmd.__doc__)(bench_cmd.bench)
app.command("inspect", help=inspect_cmd.__doc__)(inspect_cmd.inspect)
app.command("diff", help=diff_cmd.__doc__)(diff_cmd.diff)
app.command("env", help=env_cmd.__doc__)(env_cmd.env)
app.add_typer(report_cmd.app, name="report", help=report_cmd.__doc__)


def main(argv: list[str] | None = None) -> int:
    from fastdet_cli import interrupt

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    with interrupt.handled():  # Ctrl-C and SIGTERM: exit 130 within seconds, nothing half-written
        try:
            rv = _run(argv, debug)
        except SystemExit:  # a library's own signal handler (Paddle's DataLoader: sys.exit(signum))
            if not interrupt.requested():
                raise
            rv = None
        # 130: typer turns a KeyboardInterrupt into exit code 130; requested(): library code swallowed the
        # interrupt and the command went on
        if rv == 130 or interrupt.requested():
            print("interrupted", file=sys.stderr)
            return 130
        return rv


def _run(argv: list[str] | None, debug: bool) -> int:
    from fastdet_cli.errors import FastdetError

    try:
        rv = app(args=argv, standalone_mode=False)
    except FastdetError as e:
        if debug:
            raise
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(e))}",
                                                                    markup=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # usage errors from typer's (vendored) click: show them the way click does
        if callable(getattr(e, "show", None)) and hasattr(e, "exit_code"):
            e.show()
            return int(e.exit_code)
        if type(e).__name__ == "Abort":
            return 130
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
