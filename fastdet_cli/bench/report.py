"""What `fastdet bench` returns and writes as report.json, typed: the rows, the recommendation, the FP32-vs-INT8
image target, the verdicts and the record of how it was measured. `as_dict()` is report.json; `from_dict()` reads
one back (report merge, tests); the two round-trip."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastdet_cli.bench.rows import Row
from fastdet_cli.errors import FastdetError

# 2: rows carry status (ok, None, skipped, failed) and why as two fields, and their speedup over FP32
SCHEMA = "fastdet-bench/2"


@dataclass
class Recommendation:
    """The fastest backend × precision within the accuracy budget (bench/verdicts.recommend)."""

    text: str
    backend: str | None = None  # None when no backend ran
    precision: str | None = None
    latency: str | None = None  # "end-to-end" or "runtime": the latency that decided
    max_map_drop_points: float | None = None

    def as_dict(self) -> dict:
        d = {"text": self.text, "backend": self.backend, "precision": self.precision}
        if self.latency is not None:
            d.update(latency=self.latency, max_map_drop_points=self.max_map_drop_points)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> Recommendation | None:
        return None if d is None else cls(**_known(cls, d, "recommendation"))


@dataclass
class DiffTarget:
    """The backend whose FP32 and INT8 rows were both evaluated, and its INT8 model: bench's FP32-vs-INT8 images."""

    backend: str
    int8_model: str

    def as_dict(self) -> dict:
        return {"backend": self.backend, "int8_model": self.int8_model}

    @classmethod
    def from_dict(cls, d: dict | None) -> DiffTarget | None:
        return None if d is None else cls(**_known(cls, d, "diff_target"))


@dataclass
class BenchReport:
    """A bench run (or a merge of several: `merged_from` set, rows with hardware/versions/settings_note)."""

    settings: dict  # BenchSettings' fields, what runtime and end-to-end include, the dataset and metric used
    machine: dict  # CPU, flags, GPUs (machine.machine_info), peak RSS
    versions: dict  # library versions
    rows: list[Row]
    per_class_delta: dict = field(default_factory=dict)  # backend → INT8 − FP32 AP per class, flagged classes
    int8_verdict: dict[str, list[str]] = field(default_factory=dict)  # backend → why INT8 is not faster
    recommendation: Recommendation | None = None
    diff_target: DiffTarget | None = None
    merged_from: list[dict] | None = None  # merged reports: file, hardware, machine, versions, settings, recommendation
    notes: list[str] = field(default_factory=list)  # what did not happen and why (e.g. no FP32 vs INT8 images)
    schema: str = SCHEMA
    files: list = field(default_factory=list)  # the files written (api.bench with a report folder); not in JSON

    @property
    def merged(self) -> bool:
        return self.merged_from is not None

    @property
    def agreement(self) -> bool:
        """The mAP figures are agreement with FP32 (no annotations), not COCO mAP: named so everywhere."""
        return str(self.settings.get("metric", "")).startswith("agreement")

    def as_dict(self) -> dict:
        d = {"schema": self.schema, "settings": self.settings, "machine": self.machine, "versions": self.versions,
             "rows": [r.as_dict() for r in self.rows], "per_class_delta": self.per_class_delta,
             "int8_verdict": self.int8_verdict,
             "recommendation": self.recommendation.as_dict() if self.recommendation else None,
             "diff_target": self.diff_target.as_dict() if self.diff_target else None}
        if self.merged_from is not None:
            d["merged_from"] = self.merged_from
        if self.notes:
            d["notes"] = self.notes
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "the report") -> BenchReport:
        """A report.json's content back as a BenchReport; another schema or a missing part is a FastdetError."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise FastdetError(f"{where}: schema {got!r} is not {SCHEMA!r} (a report of this version's `fastdet "
                               "bench --report`; run bench again for an older one)")
        for key in ("rows", "settings", "machine"):
            if key not in d:
                raise FastdetError(f"{where}: the report has no '{key}'")
        try:
            rows = [Row.from_dict(r) for r in d["rows"]]
        except FastdetError as e:
            raise FastdetError(f"{where}: {e}") from None
        return cls(d["settings"], d["machine"], d.get("versions", {}), rows, d.get("per_class_delta", {}),
                   d.get("int8_verdict", {}), Recommendation.from_dict(d.get("recommendation")),
                   DiffTarget.from_dict(d.get("diff_target")), d.get("merged_from"), d.get("notes", []), d["schema"])


def _known(cls, d: dict, what: str) -> dict:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(d, dict) or set(d) - names:
        raise FastdetError(f"the report's {what} is not one this fastdet writes ({d!r:.80})")
    return d
