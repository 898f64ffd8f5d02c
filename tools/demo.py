"""`make demo`: the main job on the embedded default model, offline — detect on a few val images (drawn
images + JSON into build/demo/), then COCO mAP on the generated val split. Each step is a real `fastdet`
command, printed before it runs."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "demo"


def run(*args: str) -> None:
    cmd = [sys.executable, "-m", "fastdet_cli", *args]
    print(f"\n$ fastdet {shlex.join(args)}", flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    from fastdet_cli.data.dataset import resolve_dataset

    ds = resolve_dataset("default")
    images = [str(p) for _, p in ds.image_paths(limit=3)]
    run("env")
    run("infer", "--model", "default", "--backend", "ort", *images, "--json", str(OUT / "detections.json"),
        "--save-dir", str(OUT / "images"))
    for backend in ("ort", "openvino", "paddle"):
        run("eval", "--model", "default", "--backend", backend, "--json", str(OUT / f"eval_{backend}.json"))
    print(f"\ndemo outputs: {OUT}")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
