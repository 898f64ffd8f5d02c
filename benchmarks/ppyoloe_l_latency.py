"""The reference deployment's setting on its architecture: PP-YOLOE-l (ppyoloe_crn_l) at 640x640, 1 thread,
FP32 vs INT8 (PTQ), NMS cut out of the runtime graph, on ONNX Runtime, OpenVINO and Paddle Inference.

Two INT8 artifacts are made, and each backend runs the one it runs best (as `fastdet bench` does): PaddleSlim
PTQ (a Paddle program: Paddle Inference runs it in oneDNN INT8; ONNX backends its export) and the onnxruntime
engine's PTQ (ONNX Runtime's quantizer: ORT fuses it into integer kernels). The report (DIR/bench/report.json)
records the CPU flags; rows carry `runtime_ms.p50` and the artifact they ran.

There are no trained PP-YOLOE-l weights on the machines this project is built on, so the architecture is built
by paddledet with RANDOM weights: the latency is real, mAP is not measured (run `fastdet fetch
ppyoloe_crn_l_300e_coco` and `fastdet bench --model … --compress configs/ppyoloe_crn_l_300e_coco_qat.yaml`
on a networked machine for that). End-to-end figures are not meaningful with random weights (every box passes
the score threshold, so NMS dominates); the runtime table is the comparison.

    python benchmarks/ppyoloe_l_latency.py [--repeat 20] [--warmup 3] [--work-dir build/ppyoloe_l] [--threads 1]
        [--results docs/results/ppyoloe_l_<cpu>_<date>.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
use_gpu: false
architecture: YOLOv3
norm_type: bn
use_ema: false
weights: ''
num_classes: 80
metric: COCO
depth_mult: 1.0
width_mult: 1.0
export:
  post_process: true
  nms: true
  benchmark: false
  fuse_conv_bn: false
YOLOv3:
  backbone: CSPResNet
  neck: CustomCSPPAN
  yolo_head: PPYOLOEHead
  post_process: ~
CSPResNet:
  layers: [3, 6, 6, 3]
  channels: [64, 128, 256, 512, 1024]
  return_idx: [1, 2, 3]
  use_large_stem: true
CustomCSPPAN:
  out_channels: [768, 384, 192]
  stage_num: 1
  block_num: 3
  act: swish
  spp: true
PPYOLOEHead:
  fpn_strides: [32, 16, 8]
  grid_cell_scale: 5.0
  grid_cell_offset: 0.5
  static_assigner_epoch: 100
  use_varifocal_loss: true
  loss_weight: {class: 1.0, iou: 2.5, dfl: 0.5}
  static_assigner: {name: ATSSAssigner, topk: 9}
  assigner: {name: TaskAlignedAssigner, topk: 13, alpha: 1.0, beta: 6.0}
  nms: {name: MultiClassNMS, nms_top_k: 1000, keep_top_k: 100, score_threshold: 0.01, nms_threshold: 0.7}
TestDataset:
  name: ImageFolder
  anno_path: ''
  dataset_dir: ''
TestReader:
  inputs_def:
    image_shape: [3, 640, 640]
  sample_transforms:
  - Decode: {}
  - Resize: {target_size: [640, 640], keep_ratio: false, interp: 2}
  - NormalizeImage: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true}
  - Permute: {}
  batch_size: 1
"""

PTQ = """
Global:
  model_dir: {model}
  ptq_image_path: default
PTQ:
  calibration_method: avg
  batch_size: 1
  batch_nums: 8
"""

PTQ_ORT = """
Global:
  model_dir: {model}
  ptq_image_path: default
  engine: onnxruntime
PTQ:
  calibration_method: minmax
  batch_size: 1
  batch_nums: 8
"""


def export_fp32(work: Path) -> Path:
    out = work / "ppyoloe_crn_l_random"
    if (out / "model.pdmodel").exists():
        return out
    from fastdet_cli.train.export import export_ppdet

    cfg_path = work / "ppyoloe_crn_l_random.yml"
    cfg_path.write_text(CONFIG)
    export_ppdet(cfg_path, out)
    make_tame(out)
    return out


def make_tame(model_dir: Path) -> None:
    """Make the random network behave like a trained one numerically, in place (weights only; latency unchanged).

    1. PP-YOLOE's head initialises its classification and box convolutions with all-zero weights. Quantized, a
       zero weight has scale 0; paddle2onnx then quantizes the bias with scale 0 and loses it (fastdet's INT8
       check refuses such an export). They get small random values (σ = 1e-3).
    2. Batch norm at its initial statistics (mean 0, variance 1) normalises nothing: activations grow to ±5000
       through the backbone, and the network becomes chaotic — its own INT8 simulation, oneDNN INT8 and the FP32
       model disagree on half of the scores, so no INT8 export could be checked. Each batch norm's statistics are
       set to what its input has on a generated scene, one after the other in program order.
    Only the parameters file is rewritten: a re-saved program makes paddle2onnx fail on the quantized program
    later ("Input multiclass_nms3_0.tmp_0 is undefined")."""
    import numpy as np
    import paddle

    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paddle_program import static_program

    feed = sample_inputs(resolve_model(str(model_dir)).deploy)
    with static_program(model_dir) as (prog, feeds, fetches, exe, scope, prefix):
        rng = np.random.default_rng(0)
        block = prog.global_block()
        tensor = (lambda name: scope.find_var(name).get_tensor())  # noqa: E731
        for op in block.ops:
            if op.type in ("conv2d", "depthwise_conv2d"):
                w = np.array(tensor(op.input("Filter")[0]))
                if w.size and not w.any():
                    tensor(op.input("Filter")[0]).set((rng.standard_normal(w.shape) * 1e-3).astype(w.dtype),
                                                      paddle.CPUPlace())
        norms = [op for op in block.ops if op.type == "batch_norm"]
        inputs = {k: feed[k] for k in feeds}
        for op in norms:  # in program order: each one sees its input with every earlier one already set
            pruned = prog.clone()  # the executor's pruning changes the program it runs
            x = exe.run(pruned, feed=inputs, fetch_list=[op.input("X")[0]], use_prune=True)[0].astype(np.float64)
            axes = (0, 2, 3) if x.ndim == 4 else (0,)
            tensor(op.input("Mean")[0]).set(x.mean(axes).astype(np.float32), paddle.CPUPlace())
            tensor(op.input("Variance")[0]).set(x.var(axes).astype(np.float32), paddle.CPUPlace())
        print(f"{len(norms)} batch norms set to their input's statistics on a generated scene")
        data = paddle.static.serialize_persistables([block.var(n) for n in feeds], fetches, exe, program=prog)
        Path(prefix + ".pdiparams").write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "build" / "ppyoloe_l")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default="ort,openvino,paddle", help="comma-separated (GPU: trt,paddle-trt,ort-gpu)")
    ap.add_argument("--results", type=Path, help="also write bench's report.json, with the keys naming this run "
                                                   "(script, date, command, commit), here (docs/results/…: the docs' "
                                                   "tables are rendered from such files by tools/render_docs.py)")
    args = ap.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)

    from fastdet_cli import api
    from fastdet_cli.bench.run import BenchSettings
    from fastdet_cli.compress import compress
    from fastdet_cli.render.bench import print_tables, write_report
    from fastdet_cli.machine import cpu_kind
    from fastdet_cli.ui import make_console

    console = make_console()  # wide when piped: no cut numbers in a log
    fp32 = export_fp32(work)
    made = []
    for name, text, marker in (("ptq", PTQ, "model.pdmodel"), ("ptq_ort", PTQ_ORT, "model.onnx")):
        # per CPU kind: the weight bits and Paddle's INT8 op set are chosen for the CPU a model is made on
        out = work / f"ppyoloe_crn_l_random_{name}_{cpu_kind()}"
        if not (out / marker).exists():
            cfg = work / f"{name}.yaml"
            cfg.write_text(text.format(model=fp32))
            compress(cfg, "ptq", out, log=console.print)
        made.append(str(out))
    settings = BenchSettings(model=str(fp32), int8_models=tuple(made), backends=args.backends,
                             repeat=args.repeat, warmup=args.warmup, threads=args.threads,
                             eval=False, end2end=False, fp16=True)  # BF16 rows where the CPU has bf16 (bench's default)
    report = api.bench(settings, log=console.print)
    report.settings["note"] = "PP-YOLOE-l architecture with random weights: latency only"
    print_tables(report, console)
    for path in write_report(report, work / "bench"):
        console.print(f"wrote {path}")
    if args.results:
        write_results(work / "bench" / "report.json", args.results)
        console.print(f"wrote {args.results}")


def write_results(report_json: Path, out: Path) -> None:
    """bench's report.json with the keys that name the run first, as docs/results/ keeps it."""
    import json
    import subprocess
    import time

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    named = {"script": "benchmarks/ppyoloe_l_latency.py", "date": time.strftime("%Y-%m-%d"),
             "command": "python benchmarks/ppyoloe_l_latency.py " + " ".join(sys.argv[1:]),
             "commit": commit.stdout.strip() or None}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**named, **json.loads(report_json.read_text())}, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
