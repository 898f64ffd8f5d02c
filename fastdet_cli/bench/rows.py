"""A bench row: one backend × mode, what became of it (outcome.Outcome) and what it measured; typed from the run
to the renderers, written as report.json's row by `as_dict` and read back by `from_dict`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fastdet_cli.errors import FastdetError
from fastdet_cli.outcome import STATES, Outcome
from fastdet_cli.runtime.registry import BACKENDS, BackendSpec

MERGED_FIELDS = ("hardware", "versions", "settings_note", "source")  # rows of `fastdet report merge` only


@dataclass
class Row:
    spec: BackendSpec
    precision: str
    outcome: Outcome = field(default_factory=Outcome)  # ran / None (why) / skipped (why) / failed (why)
    runtime_ms: dict | None = None
    end2end_ms: dict | None = None
    stages_ms: dict | None = None
    map: float | None = None
    ap50: float | None = None
    per_class_ap: dict = field(default_factory=dict)
    model: str | None = None
    rss_mb: float | None = None
    int8_artifact: dict | None = None  # INT8 rows: path, kind, method of the artifact this backend ran
    kernels: dict | None = None  # runtime.base.Kernels: the convolution kernels' ISA, as the runtime reports it
    fp32_graph: dict | None = None  # FP32-model rows: which graph ran (artifacts.Fp32Form.as_dict)
    stopped_by: dict | None = None  # bench --time: {"runtime", "end2end"}: "repeat" or "time (T s)", the bound hit
    speedup: dict | None = None  # {"runtime": x, "end2end": y}: this backend's FP32 mean ÷ this row's (verdicts.py)
    hardware: str | None = None  # merged reports: the machine the row was measured on
    versions: str | None = None  # merged reports: fastdet's and the backend library's versions there
    settings_note: str | None = None  # merged reports: this row's values of the settings that differ
    source: int | None = None  # merged reports: the index of its input report in merged_from

    @property
    def backend(self) -> str:
        """The backend's name (tables, messages, report.json)."""
        return self.spec.name

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def as_dict(self) -> dict:
        """The report.json row: the backend's name, the outcome as `status` (ok, None, skipped, failed) and `why`;
        the merged-report fields only where set."""
        d = {"backend": self.backend, "precision": self.precision, "status": self.outcome.state,
             "why": self.outcome.why}
        d.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("spec", "precision", "outcome")
                  and not (f.name in MERGED_FIELDS and getattr(self, f.name) is None)})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        """A report.json row back as a Row; a backend this fastdet does not know, an unknown status or key is a
        FastdetError naming it."""
        names = {f.name for f in dataclasses.fields(cls)} - {"spec", "outcome"}
        unknown = set(d) - names - {"backend", "status", "why"}
        if unknown or "backend" not in d or "status" not in d:
            what = f"has unknown key(s) {', '.join(sorted(unknown))}" if unknown else "lacks backend or status"
            raise FastdetError(f"a report row {what}: not a fastdet bench report row")
        if d["backend"] not in BACKENDS:
            raise FastdetError(f"a report row names backend '{d['backend']}', which this fastdet does not know")
        if d["status"] not in STATES:
            raise FastdetError(f"a report row has status '{d['status']}' (not one of {', '.join(STATES)})")
        return cls(BACKENDS[d["backend"]], outcome=Outcome(d["status"], d.get("why", "")),
                   **{k: v for k, v in d.items() if k in names})
