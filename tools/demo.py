"""`make demo`: the main job on the embedded default model, offline, in a few minutes — detect on a few val
images (drawn images + JSON), COCO mAP, PTQ compression with PaddleSlim and with ONNX Runtime's quantizer, INT8
ONNX export, what ORT executes of its INT8 model, then the latency/mAP tables on ONNX Runtime, OpenVINO and Paddle
Inference (each backend on the INT8 model it runs best) and the recommendation. Outputs go to build/demo/.
Each step is a real `fastdet` command, printed before it runs.
The bench uses --repeat 100 --warmup 20 (the default is 1000/200) to stay
short; the numbers are means over those 100 runs, 1 thread."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "demo"
CONFIGS = ROOT / "fastdet_cli" / "configs"  # the embedded model's (shipped with the package)


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
    run("eval", "--model", "default", "--backend", "ort", "--json", str(OUT / "eval_ort.json"))
    ptq = OUT / "default_ptq"
    run("compress", str(CONFIGS / "default_ptq.yaml"), "--save-dir", str(ptq))
    ptq_ort = OUT / "default_ptq_ort"
    run("compress", str(CONFIGS / "default_ptq_ort.yaml"), "--save-dir", str(ptq_ort))
    run("export", "--model", str(ptq), "--int8", "--output", str(OUT / "default_int8_onnx"))
    run("inspect", "--model", str(ptq_ort), "--backend", "ort", "--runs", "20", "--top", "5")
    run("bench", "--model", "default", "--int8-model", str(ptq), "--int8-model", str(ptq_ort),
        "--backend", "ort,openvino,paddle", "--repeat", "100", "--warmup", "20", "--report", str(OUT / "bench"))
    print(f"\ndemo outputs: {OUT}")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
