"""Rendering a bench report: the two tables shaped like the reference's, the per-stage table, and the files
(report.json, report.csv, report.md, latency_vs_map.png) written atomically."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from fastdet_cli.bench.run import FLAG_POINTS, MODES

COLUMNS = ("FP32", "INT8", "INT8+FP16", "INT8+FP16+PM")


def _cell(row: dict | None, key: str) -> str:
    if row is None:
        return "-"
    if row["status"] != "ok":
        return "None" if row["status"].startswith("None") else row["status"].split(":")[0]
    return f"{row[key]['mean']:.2f}" if row[key] else "not run"


def table_rows(report: dict, key: str) -> list[list[str]]:
    """One row per backend: the four mode columns (mean ms), max speedup, FP32/INT8 mAP, method."""
    out = []
    backends = list(dict.fromkeys(r["backend"] for r in report["rows"]))
    by = {(r["backend"], r["precision"]): r for r in report["rows"]}
    for b in backends:
        cells = [_cell(by.get((b, m)), key) if (b, m) in by else "-" for m in MODES]
        fp32 = by.get((b, "fp32"))
        int8s = [by[(b, m)][key]["mean"] for m in MODES[1:]
                 if (b, m) in by and by[(b, m)]["status"] == "ok" and by[(b, m)][key]]
        ok = fp32 and fp32["status"] == "ok" and fp32[key] and int8s
        speed = f"{fp32[key]['mean'] / min(int8s):.2f}x" if ok else "-"
        maps = [f"{by[(b, m)]['map']:.3f}" if (b, m) in by and by[(b, m)].get("map") is not None else "-"
                for m in ("fp32", "int8")]
        status = fp32["status"] if fp32 and fp32["status"].startswith("skipped") else ""
        out.append([b, *cells, speed, *maps, status or int8_label(by.get((b, "int8")))])
    return out


def int8_label(row: dict | None) -> str:
    """What the INT8 row of a backend ran: the method and the artifact kind."""
    if not row or not row.get("int8_artifact"):
        return "-"
    from fastdet_cli.bench.artifacts import KIND_LABELS

    art = row["int8_artifact"]
    return f"{art['method']} · {KIND_LABELS.get(art['kind'], art['kind'])}"


HEADER = ["backend", *COLUMNS, "max speedup", "FP32 mAP", "INT8 mAP", "INT8 model"]


def stage_rows(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        if r["status"] != "ok" or not r["stages_ms"]:
            continue
        s = r["stages_ms"]
        out.append([r["backend"], r["precision"]] + [
            "in compute" if s[k] is None and k in ("h2d", "d2h") and r["backend"] in ("trt", "paddle-trt")
            else "-" if s[k] is None else f"{s[k]:.3f}"
            for k in ("preprocess", "h2d", "compute", "d2h", "nms", "postprocess")] + [
            f"{r['runtime_ms']['p50']:.2f}/{r['runtime_ms']['p90']:.2f}/{r['runtime_ms']['p99']:.2f}",
            f"{r['runtime_ms']['stdev']:.2f}", f"{1000 / r['end2end_ms']['mean']:.1f}", f"{r['rss_mb']:.0f}"])
    return out


STAGE_HEADER = ["backend", "precision", "preprocess", "H2D", "compute", "D2H", "NMS", "postprocess",
                "runtime p50/p90/p99", "runtime stdev", "e2e img/s", "RSS MB"]


def status_notes(report: dict) -> list[str]:
    """Why a cell says None or skipped: one line per backend × mode (the tables have room for the word only)."""
    return [f"{r['backend']} {r['precision']}: {r['status']}" for r in report["rows"] if r["status"] != "ok"]


def caption(report: dict) -> str:
    s = report["settings"]
    return (f"mean ms over {s['repeat']} runs after {s['warmup']} warm-up, {s['threads']} CPU thread(s); "
            f"CPU: {report['machine']['cpu']} ({report['machine'].get('cpu flags', '-')})")


def print_tables(report: dict, console) -> None:
    from rich.markup import escape
    from fastdet_cli.ui import Table

    for title, key in (("Runtime Benchmark", "runtime_ms"), ("End-to-end Benchmark", "end2end_ms"))[
            : 2 if report["settings"].get("end2end", True) else 1]:
        t = Table(title=f"{title} (ms) — {caption(report)}", title_justify="left")
        for h in HEADER:
            t.add_column(h, justify="left" if h in ("backend", "method") else "right")
        for row in table_rows(report, key):
            t.add_row(*row)
        console.print(t)
    for line in status_notes(report):
        console.print(line, highlight=False, markup=False)
    t = Table(title="Per-stage split of end-to-end time (mean ms)", title_justify="left")
    for h in STAGE_HEADER:
        t.add_column(h, justify="left" if h in ("backend", "precision") else "right")
    for row in stage_rows(report):
        t.add_row(*row)
    console.print(t)
    for backend, d in report["per_class_delta"].items():
        if d["flagged"]:
            console.print(f"[yellow]warning:[/] on {backend}, INT8 loses more than {FLAG_POINTS:g} AP points on: "
                          f"{escape(', '.join(d['flagged']))}", highlight=False)
    for backend, lines in report.get("int8_verdict", {}).items():
        console.print(f"[bold]why INT8 is not faster on {backend}:[/bold]", highlight=False)
        for line in lines:
            console.print(f"  - {escape(line)}", highlight=False)
    for a in report["settings"].get("int8_artifacts", []):
        console.print(f"INT8 artifact: {escape(a['method'])} ({a['kind']}) {escape(a['path'])}", highlight=False)
    if report.get("recommendation"):
        console.print(f"[bold]recommendation:[/bold] {escape(report['recommendation']['text'])}", highlight=False)


def markdown(report: dict) -> str:
    def md_table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)

    parts = [f"# fastdet bench\n\n{caption(report)}\n\nRuntime: {report['settings']['runtime_includes']}. "
             f"End-to-end: {report['settings']['end2end_includes']}.\n"]
    parts.append("## Runtime Benchmark (ms)\n\n" + md_table(HEADER, table_rows(report, "runtime_ms")))
    parts.append("## End-to-end Benchmark (ms)\n\n" + md_table(HEADER, table_rows(report, "end2end_ms")))
    notes = status_notes(report)
    if notes:
        parts.append("## None and skipped cells\n\n" + "\n".join(f"- {n}" for n in notes))
    parts.append("## Per-stage split (mean ms)\n\n" + md_table(STAGE_HEADER, stage_rows(report)))
    for backend, lines in report.get("int8_verdict", {}).items():
        parts.append(f"## Why INT8 is not faster on {backend}\n\n" + "\n".join(f"- {line}" for line in lines))
    arts = report["settings"].get("int8_artifacts", [])
    if arts:
        parts.append("## INT8 artifacts\n\n" + "\n".join(f"- {a['method']} ({a['kind']}): `{a['path']}`" for a in arts))
    if report.get("recommendation"):
        parts.append(f"## Recommendation\n\n{report['recommendation']['text']}")
    return "\n\n".join(parts) + "\n"


def csv_text(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["backend", "precision", "status", "runtime_mean_ms", "runtime_p50_ms", "runtime_p90_ms",
                "runtime_p99_ms", "runtime_stdev_ms", "end2end_mean_ms", "end2end_p50_ms", "map", "ap50",
                "int8_kind", "int8_model"])
    for r in report["rows"]:
        rt, e2e, art = r["runtime_ms"] or {}, r["end2end_ms"] or {}, r.get("int8_artifact") or {}
        w.writerow([r["backend"], r["precision"], r["status"], rt.get("mean"), rt.get("p50"), rt.get("p90"),
                    rt.get("p99"), rt.get("stdev"), e2e.get("mean"), e2e.get("p50"), r["map"], r["ap50"],
                    art.get("kind"), art.get("path")])
    return buf.getvalue()


def plot_png(report: dict) -> bytes | None:
    """Runtime latency vs mAP, one point per backend × precision (None when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in report["rows"]:
        if r["status"] == "ok" and r["map"] is not None:
            x, y = r["runtime_ms"]["mean"], r["map"]
            # a legend, not labels beside the points: points of equal mAP sit on top of each other
            ax.scatter([x], [y], marker="o" if r["precision"] == "fp32" else "s", s=40, alpha=0.8,
                       label=f"{r['backend']} {r['precision']} ({x:.1f} ms, {y:.3f})")
    if ax.collections:
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("runtime latency, mean ms")
    ax.set_ylabel("COCO mAP@[.5:.95]")
    ax.set_title("latency vs mAP")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(report: dict, out_dir: Path) -> list[Path]:
    """report.json, report.csv, report.md and latency_vs_map.png, each written atomically."""
    from fastdet_cli.io import write_bytes_atomic

    files = {"report.json": (json.dumps(report, indent=2, default=str) + "\n").encode(),
             "report.csv": csv_text(report).encode(), "report.md": markdown(report).encode()}
    png = plot_png(report)
    if png:
        files["latency_vs_map.png"] = png
    written = []
    for name, data in files.items():
        write_bytes_atomic(out_dir / name, data)
        written.append(out_dir / name)
    return written
