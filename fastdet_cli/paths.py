"""Where fastdet keeps generated and downloaded things."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = PACKAGE_DIR / "models" / "default"


def cache_dir() -> Path:
    """`$FASTDET_CACHE`, else `$XDG_CACHE_HOME/fastdet`, else `~/.cache/fastdet`."""
    env = os.environ.get("FASTDET_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastdet"
DEFAULT_PTQ_CONFIG = PACKAGE_DIR / "configs" / "default_ptq.yaml"
DEFAULT_PTQ_ORT_CONFIG = PACKAGE_DIR / "configs" / "default_ptq_ort.yaml"


def library_log_path(command: str) -> Path:
    """Where a command sends the libraries' own output: $FASTDET_CACHE/logs/<command>-<time>-<pid>.log."""
    import time

    return cache_dir() / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
