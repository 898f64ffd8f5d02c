"""`python -m fastdet_cli` — and `python fastdet_cli/` (how paddle.distributed.launch runs `-m fastdet_cli`): run
as a folder, Python puts the package folder itself first on sys.path, where a module of the package could shadow
a standard-library one (none is named like one now; fastdet_cli/inspect.py once shadowed `inspect`). It is taken
off before anything is imported."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
if __package__ in (None, ""):  # run as a folder: make the package importable from its parent
    sys.path.insert(0, os.path.dirname(_here))

from fastdet_cli.cli import main  # noqa: E402

sys.exit(main())
