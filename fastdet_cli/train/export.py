"""Exporting a ppdet model (config + optional weights) into the PaddleDetection inference format:
model.pdmodel, model.pdiparams, infer_cfg.yml — the project's own export path for every model it builds."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from collections.abc import Callable


def export_ppdet(cfg_path: Path, out_dir: Path, weights: Path | None = None, seed: int = 0,
                 prepare: Callable | None = None) -> Path:
    """Build the model of `cfg_path` (random init, or `weights`), let `prepare(model)` adjust it, export it to
    `out_dir` (written beside it first, then renamed)."""
    os.environ.setdefault("ENABLE_FALL_BACK", "False")  # else: "Can't call main_program when full_graph=False"
    from fastdet_cli.lazy import import_paddle

    paddle = import_paddle()
    from ppdet.core.workspace import load_config
    from ppdet.engine import Trainer

    paddle.set_device("cpu")
    paddle.seed(seed)
    trainer = Trainer(load_config(str(cfg_path)), mode="test")
    if weights is not None:
        trainer.load_weights(str(weights))
    if prepare is not None:
        prepare(trainer.model)
    tmp = out_dir.with_name(f".{out_dir.name}.export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        trainer.export(str(tmp))
        produced = tmp / Path(cfg_path).stem  # ppdet names the folder after the config file
        for extra in produced.glob("*.pdiparams.info"):
            extra.unlink()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        produced.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
