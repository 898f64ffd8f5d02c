"""bench's FP32 vs INT8 images: side-by-side pictures of the least-agreeing images beside a report (fastdet diff
on the recommended backend); what came of them is one of the report's notes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastdet_cli.bench.report import BenchReport
    from fastdet_cli.bench.run import BenchSettings


def diff_images(report: BenchReport, settings: BenchSettings, out: Path) -> None:
    """A few side-by-side FP32 vs INT8 images of the least-agreeing dataset images beside a bench report; what
    came of it is one of the report's notes (a failure never loses the report)."""
    from fastdet_cli.data.dataset import ImageFolder, resolve_eval_data
    from fastdet_cli.diff import diff_models
    from fastdet_cli.outcome import Outcome
    from fastdet_cli.runtime.base import RunnerOptions

    target = report.diff_target
    if target is None:
        report.notes.append("no FP32 vs INT8 images: no backend has both its FP32 and INT8 rows evaluated")
        return
    try:
        data = resolve_eval_data(settings.dataset)  # an image folder (agreement mAP): its images, no ground truth
        limit = min(settings.eval_limit or 50, 50)
        images = data.image_files(limit) if isinstance(data, ImageFolder) else []
        spec = next(s for s in settings.backends if s.name == target.backend)
        d = diff_models(settings.model, target.int8_model, spec, images, out,
                        dataset=None if isinstance(data, ImageFolder) else data, limit=limit,
                        options=RunnerOptions(threads=settings.threads), keep_images=3, montage_size=3,
                        log=lambda m: None)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        report.notes.append(f"no FP32 vs INT8 images ({Outcome.of(e).why}); the rest of the report is complete")
        return
    s = d.summary
    report.notes.append(f"FP32 vs INT8 on {target.backend} ({s.images} images): {s.matched} boxes matched, "
                        f"{s.missed} missed by INT8, {s.extra} extra; the 3 least-agreeing images are in {out}")
