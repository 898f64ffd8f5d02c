"""What users read: a rich Console that never narrows tables to 80 columns when the output is piped, and a
Table whose cells fold instead of eliding — a number is never cut to `2083.…`."""
from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table as _RichTable

PIPED_WIDTH = 240  # rich falls back to 80 columns without a terminal; logs and files have room


def make_console(stderr: bool = False, own_fd: bool = False) -> Console:
    """The console for a command's output: the terminal's width on a terminal (COLUMNS when set), else wide.
    `own_fd` writes through a duplicate of the stream's file descriptor, so the console stays visible while
    `outputs.library_output_to` sends the libraries' own output (C++ logs, progress bars, prints) to a file."""
    stream = sys.stderr if stderr else sys.stdout
    kwargs: dict = {"stderr": stderr}
    if own_fd:
        try:
            kwargs = {"file": os.fdopen(os.dup(stream.fileno()), "w", buffering=1),
                      "force_terminal": stream.isatty() or None}
        except (OSError, ValueError, AttributeError):  # no real descriptor (e.g. captured by a test runner)
            pass
    if os.environ.get("COLUMNS") or stream.isatty():
        return Console(**kwargs)
    return Console(width=PIPED_WIDTH, **kwargs)


class Table(_RichTable):
    """rich's Table whose columns fold overlong cells onto the next line rather than cutting them (columns made
    by add_column or implicitly by add_row alike), and whose title is plain text (it carries paths and names:
    `photo[red].jpg` must not be read as markup)."""

    def __init__(self, *args, title=None, **kwargs):
        from rich.text import Text

        super().__init__(*args, title=Text(title) if isinstance(title, str) else title, **kwargs)

    def add_row(self, *renderables, **kwargs) -> None:
        """Cells are plain text (file names, labels, op names are data, not markup); pass a rich Text for
        styled cells."""
        from rich.text import Text

        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **kwargs)

    def __rich_console__(self, console, options):
        for column in self.columns:
            if column.overflow == "ellipsis":
                column.overflow = "fold"
        yield from super().__rich_console__(console, options)
