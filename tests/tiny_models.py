"""Tiny real PicoDet models (random weights) exported with paddledet in PaddleDetection's three export kinds."""
from __future__ import annotations

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
    import numpy as np

    from fastdet_cli.data.synth import CLASSES
    from fastdet_cli.train.export import export_ppdet
    from fastdet_cli.train.picodet_config import write_picodet_config

    post_process, nms = KINDS[kind]
    work = out_dir.parent / f".{out_dir.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = write_picodet_config(work / "tiny.yml", data_dir, len(CLASSES), size=size, scale=0.25, channels=32,
                                    prior_prob=0.2, post_process=post_process, nms=nms)

    def spread(model):
        # ppdet's init (zero BN shifts, tiny head weights, a constant prior bias) makes every cell score and
        # box alike with random weights; spread biases and the head's weights so outputs are distinct and NMS
        # has real work to do
        rng = np.random.default_rng(seed)
        for name, param in model.named_parameters():
            if name.endswith(".bias") or name.endswith("._mean"):
                param.set_value(rng.normal(0, 0.5, param.shape).astype("float32"))
            elif name.startswith("head.") and len(param.shape) == 4:
                param.set_value(rng.normal(0, 0.15, param.shape).astype("float32"))

    try:
        return export_ppdet(cfg_path, out_dir, seed=seed, prepare=spread)
    finally:
        shutil.rmtree(work, ignore_errors=True)
