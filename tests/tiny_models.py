"""Tiny real PicoDet models (random weights) exported with paddledet in PaddleDetection's three export kinds."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

KINDS = {  # kind -> (export.post_process, export.nms)
    "nms": (True, True),
    "boxes_scores": (True, False),
    "raw_heads": (False, False),
}


def build_tiny_picodet(out_dir: Path, kind: str, data_dir: Path, size: int = 96, seed: int = 0) -> Path:
    """Export a small random-init PicoDet (LCNet x0.25, 32 channels) of `kind` into `out_dir`.

    prior_prob is raised so random weights give a spread of scores above the NMS threshold."""
    os.environ.setdefault("ENABLE_FALL_BACK", "False")
    import pycocotools.mask  # noqa: F401  (before paddle)
    import paddle
    from ppdet.core.workspace import load_config
    from ppdet.engine import Trainer

    from fastdet_cli.data.synth import CLASSES
    from fastdet_cli.train.picodet_config import write_picodet_config

    post_process, nms = KINDS[kind]
    work = out_dir.parent / f".{out_dir.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = write_picodet_config(work / "tiny.yml", data_dir, len(CLASSES), size=size, scale=0.25, channels=32,
                                    prior_prob=0.2, post_process=post_process, nms=nms)
    paddle.set_device("cpu")
    paddle.seed(seed)
    trainer = Trainer(load_config(str(cfg_path)), mode="test")
    # ppdet's init (zero BN shifts, tiny head weights, a constant prior bias) makes every cell score and box
    # alike with random weights; spread biases and the head's weights so outputs are distinct and NMS has
    # real work to do
    import numpy as np

    rng = np.random.default_rng(seed)
    for name, param in trainer.model.named_parameters():
        if name.endswith(".bias") or name.endswith("._mean"):
            param.set_value(rng.normal(0, 0.5, param.shape).astype("float32"))
        elif name.startswith("head.") and len(param.shape) == 4:
            param.set_value(rng.normal(0, 0.15, param.shape).astype("float32"))
    trainer.export(str(work / "export"))
    shutil.move(str(work / "export" / "tiny"), str(out_dir))
    shutil.rmtree(work, ignore_errors=True)
    for extra in out_dir.glob("*.pdiparams.info"):
        extra.unlink()
    return out_dir
