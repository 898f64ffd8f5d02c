"""Options shared by several commands (one definition each)."""
from __future__ import annotations

import typer

from fastdet_cli import api

BACKEND_NAMES = api.backend_names()

Model = typer.Option("default", "--model", "-m",
                     help="Paddle model dir, ONNX file/dir, or 'default' (the embedded model).")
Backend = typer.Option("ort", "--backend", "-b", help=f"Runtime backend: {', '.join(BACKEND_NAMES)}.")
Threads = typer.Option(1, "--threads", min=1, help="CPU threads (intra-op) for the backend.")
Device = typer.Option("cpu", "--device", help="cpu or gpu (OpenVINO also takes its device names, e.g. GPU.0).")
Dataset = typer.Option("default", "--dataset", "-d",
                       help="COCO dataset dir (annotations/instances_*.json + images), a folder of images "
                            "(no labels: agreement mAP with the FP32 model's detections; eval needs --reference "
                            "for it), or 'default' (generated val split).")


def Flag(default: bool, *decls: str, help: str):  # noqa: N802 (reads like typer.Option)
    """A boolean option shown without a `<bool>` placeholder (it takes no value)."""
    return typer.Option(default, *decls, help=help, metavar="")

