"""Train the embedded default detector (a PicoDet-XS-like net at 192 px) from scratch on CPU.

    python tools/train_default.py --work-dir build/train            # train (resumes if a checkpoint exists)
    python tools/train_default.py --work-dir build/train --export-only  # export the last checkpoint

Seeded and resumable: a checkpoint is written every epoch into WORK_DIR/ckpt/fastdet_default/, and a new run
with the same WORK_DIR continues from the newest one. The exported model (model.pdmodel, model.pdiparams,
infer_cfg.yml) goes to fastdet_cli/models/default/ — the package data `--model default` uses.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pycocotools.mask  # noqa: F401,E402  (must precede `import paddle`: zlib clash → SIGSEGV otherwise)



def write_config(work_dir: Path, data_dir: Path, epochs: int, batch: int, lr: float, size: int) -> Path:
    from fastdet_cli.data.synth import CLASSES
    from fastdet_cli.train.picodet_config import write_picodet_config

    return write_picodet_config(work_dir / "fastdet_default.yml", data_dir, len(CLASSES), ckpt_dir=work_dir / "ckpt",
                                epochs=epochs, batch=batch, lr=lr, size=size)


def newest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest `<epoch>.pdparams` (or model_final) checkpoint, without its suffix."""
    if not ckpt_dir.is_dir():
        return None
    final = ckpt_dir / "model_final.pdparams"
    if final.exists():
        return final.with_suffix("")
    epochs = [(int(m.group(1)), p) for p in ckpt_dir.glob("*.pdparams")
              if (m := re.fullmatch(r"(\d+)\.pdparams", p.name))]
    return max(epochs)[1].with_suffix("") if epochs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "build" / "train")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.12)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "fastdet_cli" / "models" / "default")
    args = ap.parse_args()

    os.environ.setdefault("ENABLE_FALL_BACK", "False")
    from fastdet_cli.data import dataset

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dir = dataset.default_dataset_dir(splits=("train", "val"))
    cfg_path = write_config(work, data_dir, args.epochs, args.batch, args.lr, args.size)

    import random

    import numpy as np
    import paddle
    from ppdet.core.workspace import load_config
    from ppdet.engine import Trainer

    paddle.set_device("cpu")
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    cfg = load_config(str(cfg_path))
    ckpt_dir = work / "ckpt" / "fastdet_default"
    ckpt = newest_checkpoint(ckpt_dir)

    if not args.export_only:
        trainer = Trainer(cfg, mode="train")
        if ckpt is not None and ckpt.name != "model_final":
            print(f"resuming from {ckpt}", flush=True)
            trainer.resume_weights(str(ckpt))
        t0 = time.time()
        if ckpt is None or ckpt.name != "model_final":
            trainer.train(validate=True)
        print(f"training wall time this run: {time.time() - t0:.0f} s", flush=True)
        ckpt = newest_checkpoint(ckpt_dir)

    if ckpt is None:
        sys.exit("no checkpoint to export")
    from fastdet_cli.train.export import export_ppdet

    export_ppdet(cfg_path, args.out, weights=ckpt)
    print(f"exported {ckpt} -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
