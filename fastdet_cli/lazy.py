"""Late imports of heavy libraries, with one actionable error when one is missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from fastdet_cli.errors import MissingDependency


def require(module: str, extra: str, what: str, hint: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependency naming the pip extra that brings it (or `hint`: the install
    command where no extra does)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        if e.name and e.name.split(".")[0] != root:
            raise  # the library is there but broken: that is a real error, show it
        raise MissingDependency(module, extra, what, hint=hint) from None


def import_paddle() -> ModuleType:
    """Import paddle safely: pycocotools (if installed) must be imported first, or a zlib clash segfaults."""
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        pass
    return require("paddle", "paddle", "Paddle Inference")
