"""A bench row: one backend × mode, what became of it (outcome.Outcome) and what it measured; typed until the
report is written (`as_dict`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fastdet_cli.outcome import Outcome


@dataclass
class Row:
    backend: str
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

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def as_dict(self) -> dict:
        """The report.json row: the outcome as `status` (ok, None, skipped, failed) and `why`."""
        d = {"backend": self.backend, "precision": self.precision, "status": self.outcome.state,
             "why": self.outcome.why}
        d.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("backend", "precision", "outcome")})
        return d
