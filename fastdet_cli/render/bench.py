"""Rendering a bench report (bench.report.BenchReport): the two tables shaped like the reference's, the
per-stage and kernel tables, and the files (report.json, report.csv, report.md, latency_vs_map.png) written
atomically."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fastdet_cli.bench.verdicts import FLAG_POINTS
from fastdet_cli.outcome import RAN, SKIPPED
from fastdet_cli.runtime.registry import AS_GIVEN, MAP_MODES, MODES

if TYPE_CHECKING:
    from fastdet_cli.bench.report import BenchReport
    from fastdet_cli.bench.rows import Row

COLUMNS = ("FP32", "BF16", "INT8", "INT8+FP16/BF16", "INT8+FP16+PM")  # MODES, in order


def _cell(row: Row | None, key: str) -> str:
    if row is None:
        return "-"
    if row.outcome.state != RAN:  # None, skipped or failed: the reason is in the notes under the table
        return row.outcome.state
    stats = getattr(row, key)
    return f"{stats['mean']:.2f}" if stats else "not run"


def _group(r: Row) -> tuple[str, str, str]:
    """A table row's identity: the backend, and in a merged report also the machine and the row's settings; the
    FP32 graph as given (where the FP32 column runs a faster rewrite of it) is a table row of its own."""
    as_given = " (FP32 as given)" if r.precision == AS_GIVEN else ""
    return (r.hardware or ""), (r.settings_note or ""), r.backend + as_given


def _column(r: Row) -> str:
    return "fp32" if r.precision == AS_GIVEN else r.precision


def table_rows(report: BenchReport, key: str) -> list[list[str]]:
    """One row per backend (per machine and backend in a merged report): the four mode columns (mean ms), max
    speedup, FP32/INT8 mAP, method; merged reports add hardware first and versions and settings last."""
    out = []
    by = {(_group(r), _column(r)): r for r in report.rows}
    for g in dict.fromkeys(_group(r) for r in report.rows):
        cells = [_cell(by.get((g, m)), key) if (g, m) in by else "-" for m in MODES]
        fp32 = by.get((g, "fp32"))
        ratios = [(by[(g, m)].speedup or {}).get(key.removesuffix("_ms")) for m in MODES[1:] if (g, m) in by]
        ratios = [x for x in ratios if x]
        speed = f"{max(ratios):.2f}x" if ratios else "-"
        maps = [f"{by[(g, m)].map:.3f}" if (g, m) in by and by[(g, m)].map is not None else "-"
                for m in MAP_MODES]
        skipped = f"{SKIPPED}: {fp32.outcome.why}" if fp32 and fp32.outcome.state == SKIPPED else ""
        row = [g[2], *cells, speed, *maps, skipped or int8_label(by.get((g, "int8")))]
        if report.merged:
            first = next(r for (gg, _), r in by.items() if gg == g)
            row = [g[0], *row, (first.versions or "-"), g[1] or "-"]
        out.append(row)
    return out


def int8_label(row: Row | None) -> str:
    """What the INT8 row of a backend ran: the method and the artifact kind."""
    if not row or not row.int8_artifact:
        return "-"
    from fastdet_cli.artifacts import KIND_LABELS

    art = row.int8_artifact
    return f"{art['method']} · {KIND_LABELS.get(art['kind'], art['kind'])}"


HEADER = ["backend", *COLUMNS, "max speedup", "FP32 mAP", "BF16 mAP", "INT8 mAP", "INT8 model"]


def header(report: BenchReport) -> list[str]:
    cols = [h.replace("mAP", "agreement mAP") for h in HEADER] if report.agreement else HEADER
    return ["hardware", *cols, "versions", "settings"] if report.merged else cols


def stage_rows(report: BenchReport) -> list[list[str]]:
    out = []
    for r in report.rows:
        if r.outcome.state != RAN or not r.stages_ms:
            continue
        s = r.stages_ms
        out.append(([r.hardware] if report.merged else []) + [r.backend, r.precision] + [
            "in compute" if s[k] is None and k in ("h2d", "d2h") and r.spec.copies_in_compute
            else "-" if s[k] is None else f"{s[k]:.3f}"
            for k in ("preprocess", "h2d", "compute", "d2h", "nms", "postprocess")] + [
            f"{r.runtime_ms['p50']:.2f}/{r.runtime_ms['p90']:.2f}/{r.runtime_ms['p99']:.2f}",
            f"{r.runtime_ms['stdev']:.2f}", f"{1000 / r.end2end_ms['mean']:.1f}", f"{r.rss_mb:.0f}"])
    return out


STAGE_HEADER = ["backend", "precision", "preprocess", "H2D", "compute", "D2H", "NMS", "postprocess",
                "runtime p50/p90/p99", "runtime stdev", "e2e img/s", "RSS MB"]


def stage_header(report: BenchReport) -> list[str]:
    return ["hardware", *STAGE_HEADER] if report.merged else STAGE_HEADER


def _who(r: Row) -> str:
    return f"{r.backend} {r.precision}" + (f" on {r.hardware}" if r.hardware else "")


def kernel_rows(report: BenchReport) -> list[list[str]]:
    """Which kernels each row ran (instruction set of its convolutions, how it was read): a table from an AMX
    machine and one from a VNNI or AVX2 machine cannot be mistaken for each other."""
    out = []
    for r in report.rows:
        k = r.kernels
        if r.outcome.state == RAN and k:
            isa = " · ".join(f"{name} {n}" if n else name for name, n in k["conv_isa"].items()) or "?"
            out.append(([r.hardware] if report.merged else []) + [
                r.backend, r.precision, isa, k.get("int8_dot") or "-", k.get("inference_precision") or "-",
                k["source"]])
    return out


def kernel_header(report: BenchReport) -> list[str]:
    cols = ["backend", "precision", "convolution kernels (ISA, data type: count)", "INT8 dot products",
            "float ops in", "read from"]
    return ["hardware", *cols] if report.merged else cols


def status_notes(report: BenchReport) -> list[str]:
    """Why a cell says None or skipped: one line per backend × mode (the tables have room for the word only)."""
    return [f"{_who(r)}: {r.outcome.state}: {r.outcome.why}" for r in report.rows if r.outcome.state != RAN]


def fp32_notes(report: BenchReport) -> list[str]:
    """Which graph each backend's FP32 column ran, where fastdet chose between the graph as given and a rewrite."""
    out = []
    for r in report.rows:
        g = r.fp32_graph or {}
        if r.precision == "fp32" and g.get("chosen_by"):
            out.append(f"{r.backend} FP32 column: {g['graph']} ({g['chosen_by']})"
                       + ("; speedups use it" if g["graph"] != "as given" else ""))
    return out


def caption(report: BenchReport) -> str:
    s = report.settings
    if report.merged:
        text = (f"rows from {len(report.merged_from)} bench reports; mean ms over "
                f"{_setting(s, 'repeat')} runs after {_setting(s, 'warm-up', 'warmup')} warm-up, "
                f"{_setting(s, 'threads')} CPU thread(s); hardware and versions per row")
        if s.get("differing"):
            text += "; settings differ between reports (" + ", ".join(
                f"{k}: {' vs '.join(dict.fromkeys(v))}" for k, v in s["differing"].items()) + \
                "): the settings column gives each row's, compare rows only where it matches"
        return text
    runs = (f"mean ms over {s['repeat']} runs after {s['warmup']} warm-up" if not s.get("time_limit") else
            f"mean ms over at most {s['repeat']} runs or {s['time_limit']:g} s per row (the runs each row took: "
            f"report.json n, stopped_by) after at most {s['warmup']} warm-up runs or {0.2 * s['time_limit']:g} s")
    return (f"{runs}, {s['threads']} CPU thread(s); "
            f"CPU: {report.machine['cpu']} ({report.machine.get('cpu flags', '-')})"
            + ("; mAP = agreement with each backend's FP32 detections (no annotations)" if report.agreement else ""))


def _setting(s: dict, label: str, key: str | None = None) -> str:
    """A setting of a merged report: its common value, or 'per-row' when the inputs differ."""
    return "per-row" if label in s.get("differing", {}) else str(s.get(key or label))


def print_tables(report: BenchReport, console) -> None:
    from rich.markup import escape
    from fastdet_cli.ui import Table

    for title, key in (("Runtime Benchmark", "runtime_ms"), ("End-to-end Benchmark", "end2end_ms"))[
            : 2 if report.settings.get("end2end", True) else 1]:
        t = Table(title=f"{title} (ms) — {caption(report)}", title_justify="left")
        for h in header(report):
            t.add_column(h, justify="left" if h in ("hardware", "backend", "INT8 model", "versions", "settings")
                         else "right")
        for row in table_rows(report, key):
            t.add_row(*row)
        console.print(t)
    for line in status_notes(report) + fp32_notes(report):
        console.print(line, highlight=False, markup=False)
    kernels = kernel_rows(report)
    if kernels:
        t = Table(title="Kernels the runtimes chose", title_justify="left")
        for h in kernel_header(report):
            t.add_column(h)
        for row in kernels:
            t.add_row(*row)
        console.print(t)
    stages = stage_rows(report)
    if stages:  # none without end-to-end timing
        t = Table(title="Per-stage split of end-to-end time (mean ms)", title_justify="left")
        for h in stage_header(report):
            t.add_column(h, justify="left" if h in ("hardware", "backend", "precision") else "right")
        for row in stages:
            t.add_row(*row)
        console.print(t)
    for backend, d in report.per_class_delta.items():
        if d["flagged"]:
            console.print(f"[yellow]warning:[/] on {escape(backend)}, INT8 loses more than {FLAG_POINTS:g} AP points "
                          f"on: {escape(', '.join(d['flagged']))}", highlight=False)
    for backend, lines in report.int8_verdict.items():
        console.print(f"[bold]why INT8 is not faster on {escape(backend)}:[/bold]", highlight=False)
        for line in lines:
            console.print(f"  - {escape(line)}", highlight=False)
    for a in report.settings.get("int8_artifacts", []):
        console.print(f"INT8 artifact: {escape(a['method'])} ({a['kind']}) {escape(a['path'])}", highlight=False)
    if report.recommendation:
        console.print(f"[bold]recommendation:[/bold] {escape(report.recommendation.text)}", highlight=False)
    for line in source_lines(report):
        console.print(f"merged: {escape(line)}", highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False)


def source_lines(report: BenchReport) -> list[str]:
    """A merged report's inputs: file, machine, and that machine's own recommendation."""
    out = []
    for src in (report.merged_from or []):
        rec = (src.get("recommendation") or {}).get("text") or "-"
        out.append(f"{src['file']}: {src['hardware']}; recommendation there: {rec}")
    return out


def markdown(report: BenchReport) -> str:
    def md_table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)

    parts = [f"# fastdet bench\n\n{caption(report)}\n\nRuntime: {report.settings['runtime_includes']}. "
             f"End-to-end: {report.settings['end2end_includes']}.\n"]
    parts.append("## Runtime Benchmark (ms)\n\n" + md_table(header(report), table_rows(report, "runtime_ms")))
    parts.append("## End-to-end Benchmark (ms)\n\n" + md_table(header(report), table_rows(report, "end2end_ms")))
    notes = status_notes(report)
    if notes:
        parts.append("## None and skipped cells\n\n" + "\n".join(f"- {n}" for n in notes))
    if fp32_notes(report):
        parts.append("## FP32 graphs\n\n" + "\n".join(f"- {n}" for n in fp32_notes(report)))
    if kernel_rows(report):
        parts.append("## Kernels the runtimes chose\n\n" + md_table(kernel_header(report), kernel_rows(report)))
    if stage_rows(report):
        parts.append("## Per-stage split (mean ms)\n\n" + md_table(stage_header(report), stage_rows(report)))
    for backend, lines in report.int8_verdict.items():
        parts.append(f"## Why INT8 is not faster on {backend}\n\n" + "\n".join(f"- {line}" for line in lines))
    arts = report.settings.get("int8_artifacts", [])
    if arts:
        parts.append("## INT8 artifacts\n\n" + "\n".join(f"- {a['method']} ({a['kind']}): `{a['path']}`" for a in arts))
    if report.recommendation:
        parts.append(f"## Recommendation\n\n{report.recommendation.text}")
    if report.notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in report.notes))
    if report.merged:
        parts.append("## Merged reports\n\n" + "\n".join(f"- {line}" for line in source_lines(report)))
    return "\n\n".join(parts) + "\n"


def csv_text(report: BenchReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["backend", "precision", "status", "why", "runtime_mean_ms", "runtime_p50_ms", "runtime_p90_ms",
                "runtime_p99_ms", "runtime_stdev_ms", "end2end_mean_ms", "end2end_p50_ms", "speedup_runtime",
                "speedup_end2end", "map", "ap50", "int8_kind", "int8_model", "kernels", "hardware", "versions",
                "settings"])
    for r in report.rows:
        rt, e2e, art = r.runtime_ms or {}, r.end2end_ms or {}, r.int8_artifact or {}
        speed = r.speedup or {}
        w.writerow([r.backend, r.precision, r.outcome.state, r.outcome.why, rt.get("mean"), rt.get("p50"),
                    rt.get("p90"), rt.get("p99"), rt.get("stdev"), e2e.get("mean"), e2e.get("p50"),
                    speed.get("runtime"), speed.get("end2end"), r.map, r.ap50,
                    art.get("kind"), art.get("path"),
                    " · ".join(f"{k} {n}" for k, n in (r.kernels or {}).get("conv_isa", {}).items()),
                    (r.hardware or ""), (r.versions or ""),
                    (r.settings_note or "")])
    return buf.getvalue()


def plot_png(report: BenchReport) -> bytes | None:
    """Runtime latency vs mAP, one point per backend × precision, the accuracy budget of each backend (its FP32
    mAP less the recommendation's max_map_drop) as a dashed line, the recommended point ringed; the legend sits
    beside the axes, off the data (None when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = plot_figure(report, plt)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_figure(report: BenchReport, plt):
    """The figure of `plot_png` (matplotlib's pyplot passed in)."""
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    rec = report.recommendation
    drop = rec.max_map_drop_points if rec else None
    budgets: dict[float, list[str]] = {}
    for r in report.rows:
        if r.outcome.state == RAN and r.map is not None:
            x, y = r.runtime_ms["mean"], r.map
            # a legend, not labels beside the points: points of equal mAP sit on top of each other
            ax.scatter([x], [y], marker="o" if r.precision == "fp32" else "s", s=40, alpha=0.8,
                       label=f"{_who(r)} ({x:.1f} ms, {y:.3f})")
            if r.precision == "fp32" and drop is not None:
                budgets.setdefault(round(y - drop / 100, 4), []).append(r.backend)
            if (r.backend, r.precision) == ((rec.backend, rec.precision) if rec else None):
                ax.scatter([x], [y], s=260, facecolors="none", edgecolors="black", linewidths=1.5,
                           label=f"recommended: {_who(r)}")
    for level, backends in sorted(budgets.items()):
        ax.axhline(level, linestyle="--", linewidth=1, color="grey",
                   label=f"budget: FP32 − {drop:g} pt ({', '.join(backends)})")
    if ax.collections:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.set_xlabel("runtime latency, mean ms")
    ax.set_ylabel("agreement mAP with FP32" if report.agreement else "COCO mAP@[.5:.95]")
    ax.set_title("latency vs mAP")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


PLOT_MISSING = "latency_vs_map.png not written: in the fastdet clone, pip install -e '.[plot]'"


def write_report(report: BenchReport, out_dir: Path) -> list[Path]:
    """report.json, report.csv, report.md and latency_vs_map.png, each written atomically. Without matplotlib
    (the `plot` extra) there is no PNG, and report.md ends with a line that says so."""
    from fastdet_cli.outputs import write_bytes_atomic

    png = plot_png(report)
    md = markdown(report) + ("" if png else f"\n{PLOT_MISSING}\n")
    files = {"report.json": (json.dumps(report.as_dict(), indent=2, default=str) + "\n").encode(),
             "report.csv": csv_text(report).encode(), "report.md": md.encode()}
    if png:
        files["latency_vs_map.png"] = png
    written = []
    for name, data in files.items():
        write_bytes_atomic(out_dir / name, data)
        written.append(out_dir / name)
    return written
