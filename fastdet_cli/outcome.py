"""What became of one measurement (a bench row: one backend × mode): it ran, the backend has no such mode ("None",
the reference's word), it cannot run on this machine (skipped), or it failed. One small type, so no code parses a
status back out of a string; report.json stores the state and the reason as two fields."""
from __future__ import annotations

from dataclasses import dataclass

RAN, NONE, SKIPPED, FAILED = "ok", "None", "skipped", "failed"
STATES = (RAN, NONE, SKIPPED, FAILED)


@dataclass(frozen=True)
class Outcome:
    state: str = RAN
    why: str = ""

    def __post_init__(self):
        if self.state not in STATES:
            raise ValueError(f"unknown outcome state {self.state!r}")

    @property
    def ok(self) -> bool:
        return self.state == RAN

    def __str__(self) -> str:
        return self.state if self.ok else f"{self.state}: {self.why}"

    @classmethod
    def of(cls, error: BaseException) -> Outcome:
        """The outcome an exception means: UnsupportedMode → None, a missing library or device → skipped,
        anything else → failed (its type and first line)."""
        from fastdet_cli.errors import MissingDependency, NoDevice, UnsupportedMode

        if isinstance(error, UnsupportedMode):
            return cls(NONE, str(error))
        if isinstance(error, (MissingDependency, NoDevice)):
            return cls(SKIPPED, str(error))
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return cls(FAILED, f"{type(error).__name__}: {first}"[:300])
