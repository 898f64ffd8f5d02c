"""Runtime layer: one runner contract (base.py) and one backend table (registry.py)."""
from fastdet_cli.runtime.base import Runner, RunnerOptions, TensorMeta
from fastdet_cli.runtime.registry import BACKENDS, create_runner, get_backend

__all__ = ["BACKENDS", "Runner", "RunnerOptions", "TensorMeta", "create_runner", "get_backend"]
