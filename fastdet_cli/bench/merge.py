"""`fastdet report merge`: one table out of `fastdet bench --report` runs made on several machines.

Every row keeps its own settings, machine and versions. The merged report has the single-run shape (its schema,
so the same tables, CSV, Markdown and plot render it) plus `merged_from` (one entry per input
report) and, per row, `hardware`, `versions` and `settings_note`: the row's values of the settings that differ
between the inputs (threads, repeat, warm-up, dataset, mAP subset…), so figures measured differently are never
compared silently.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from fastdet_cli.bench.report import BenchReport
from fastdet_cli.errors import FastdetError

# settings that change what a figure means; a difference between inputs is shown next to the figures
COMPARED_SETTINGS = {"threads": "threads", "repeat": "repeat", "warmup": "warm-up", "time_limit": "time bound",
                     "dataset_used": "dataset",
                     "eval_limit": "mAP images", "end2end": "end-to-end", "model": "model"}


def load_report(spec: str | Path) -> tuple[Path, BenchReport]:
    """A report.json (or a folder holding one) written by `fastdet bench --report`."""
    path = Path(spec)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise FastdetError(f"no bench report at {spec} (give report.json files or the folders `--report` wrote)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FastdetError(f"{path} is not a readable JSON report: {e}") from None
    return path, BenchReport.from_dict(data, str(path))


def merge_reports(specs: list[str | Path]) -> BenchReport:
    """The merged report of `specs` (see the module doc); duplicate rows are an error."""
    if not specs:
        raise FastdetError("give at least one report to merge")
    loaded = [load_report(s) for s in specs]
    seen_files = Counter(p.resolve() for p, _ in loaded)
    twice = [str(p) for p, n in seen_files.items() if n > 1]
    if twice:
        raise FastdetError(f"the same report is given twice: {', '.join(twice)}")
    metrics = {str(d.settings.get("metric", "COCO")).split(":")[0] for _, d in loaded}
    if len(metrics) > 1:
        raise FastdetError("these reports measure different things (" + " and ".join(sorted(metrics)) + "): "
                           "agreement mAP and COCO mAP never share a table; merge each kind on its own")
    differing = {k for k in COMPARED_SETTINGS
                 if len({json.dumps(d.settings.get(k), sort_keys=True) for _, d in loaded}) > 1}
    rows, sources = _merged_rows(loaded, differing)
    settings = {k: v for k, v in loaded[0][1].settings.items() if k not in differing}
    settings["differing"] = {COMPARED_SETTINGS[k]: [_short(d.settings.get(k)) for _, d in loaded]
                             for k in sorted(differing)}
    return BenchReport(
        settings, {"cpu": f"{len({s['hardware'] for s in sources})} machine(s): see the hardware column",
                   "cpu flags": "per row"}, {}, rows,
        per_class_delta={f"{s['hardware']}: {b}": v for s, (_, d) in zip(sources, loaded)
                         for b, v in d.per_class_delta.items()},
        int8_verdict={f"{b} on {s['hardware']}": v for s, (_, d) in zip(sources, loaded)
                      for b, v in d.int8_verdict.items()},
        recommendation=None,  # a recommendation holds for one machine: each input's is in merged_from
        merged_from=sources)


def _merged_rows(loaded: list[tuple[Path, BenchReport]], differing: set[str]) -> tuple[list, list[dict]]:
    """Every input's rows with their machine, versions and differing settings; one source entry per input."""
    import dataclasses

    from fastdet_cli.machine import hardware_label

    rows, sources, keys = [], [], {}
    for i, (path, data) in enumerate(loaded):
        hardware = data.machine.get("hardware") or hardware_label(data.machine)
        note = ", ".join(f"{COMPARED_SETTINGS[k]}={_short(data.settings.get(k))}" for k in sorted(differing))
        sources.append({"file": str(path), "hardware": hardware, "machine": data.machine, "versions": data.versions,
                        "settings": data.settings,
                        "recommendation": data.recommendation.as_dict() if data.recommendation else None})
        for r in data.rows:
            row = dataclasses.replace(r, hardware=r.hardware or hardware, settings_note=note, source=i,
                                      versions=r.versions or _row_versions(r.backend, data.versions))
            key = (row.hardware, row.backend, row.precision, row.model, note)
            if key in keys:
                raise FastdetError(f"duplicate row {row.backend} {row.precision} on {row.hardware}: in "
                                   f"{keys[key]} and {path} (merge each machine's run once)")
            keys[key] = str(path)
            rows.append(row)
    return rows, sources


def _short(value) -> str:
    """A setting as the table shows it: a path by its last parts (a COCO annotation file with its dataset)."""
    if not (isinstance(value, str) and "/" in value):
        return str(value)
    p = Path(value)
    return f"{p.parent.parent.name}/{p.name}" if p.parent.name == "annotations" else p.name


def _row_versions(backend: str, versions: dict) -> str:
    """fastdet's and the row's backend library's versions, as the report recorded them."""
    from fastdet_cli.runtime.registry import BACKENDS

    parts = [f"fastdet {versions.get('fastdet-cli') or '?'}"]
    spec = BACKENDS.get(backend)
    if spec is not None:
        parts.append(f"{spec.dist} {versions.get(spec.dist) or '?'}")
    return ", ".join(parts)
