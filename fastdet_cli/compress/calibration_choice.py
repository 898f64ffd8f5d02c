"""`PTQ.calibration_method: auto` (engine onnxruntime, the default when unset): each calibration of CALIBRATIONS
quantizes with one half of the calibration images and is scored on the other half, both ways round; the best is
used for the real quantization on all the images."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from fastdet_cli.compress.calibration import Statistics
from fastdet_cli.compress.ort_quantize import quantize, write_model_dir
from fastdet_cli.compress.samples import FeedSamples
from fastdet_cli.det.model import ModelSource
from fastdet_cli.errors import FastdetError
from fastdet_cli.runtime.registry import BackendSpec

# what `calibration_method: auto` tries, in order of preference on a tie. Entropy is left out: under fastdet's
# settings ORT's Entropy calibrator writes a model byte-identical to MinMax's (real-weight PicoDet, 2026-12-06);
# Distribution too: 2% of the FP32 boxes kept there, where Percentile 99.99 kept 78% (docs/performance.md)
CALIBRATIONS = (("Percentile", 99.99), ("Percentile", 99.999), ("Percentile", 99.9), ("MinMax", None))


def choose_calibration(fp32: ModelSource, pre: Path, samples: FeedSamples, settings: dict, post: list[str],
                       work: Path, note: dict, runtime: BackendSpec, log=print,
                       stats: Statistics | None = None) -> dict:
    """`PTQ.calibration_method: auto`: the calibration images are split in two halves; every calibration of
    CALIBRATIONS quantizes with one half and is scored on the other — agreement mAP with the FP32 model's
    detections there, on `runtime` (the runtime the form is made for) — both ways round (a range that one outlier
    image widens, MinMax's, shows when that image is among the calibrating half: measured once, MinMax won on one
    split of the real-weight pages and kept 0.21 agreement on all of them). The best mean (the first on a tie)
    goes into `settings` for the real quantization on all the images. Only calibration images are read: never the
    eval or the search's dataset. Returns the record (also `settings["calibration_strategy"]`)."""
    files = list(samples.files)
    if len(files) < 4:
        raise FastdetError(f"PTQ.calibration_method auto splits the calibration images in two (each half calibrates, "
                           f"the other measures): {len(files)} image(s) are too few; give at least 4, or name a method")
    stats = stats or Statistics(samples, log)
    halves = tuple([files[i] for i in part] for part in stats.parts)  # the halves the statistics were split into
    folds = _folds(samples, halves, fp32, runtime, work)
    log(f"calibration strategy: {len(CALIBRATIONS)} calibrations, each on one half of the {len(files)} calibration "
        f"images and measured on the other, both ways (agreement mAP with FP32 on {runtime.name})")
    tried = []
    for i, (method, percentile) in enumerate(CALIBRATIONS):
        trial = _trial_settings(settings, method, percentile)
        t0 = time.perf_counter()
        scores = [_fold_score(pre, subset, dataset, trial, post, stats, k, work / f"strategy_{i}_{k}", fp32, note,
                              runtime) for k, (subset, dataset) in enumerate(folds)]
        name = f"{method} {percentile:g}" if percentile is not None else method
        tried.append({"calibration": name, "method": method, "percentile": percentile, "agreement_map_folds": scores,
                      "agreement_map": round(sum(scores) / len(scores), 4),
                      "seconds": round(time.perf_counter() - t0, 1)})
        log(f"  {name}: agreement mAP {' / '.join(f'{x:.4f}' for x in scores)} (mean {tried[-1]['agreement_map']:.4f})")
    best = max(tried, key=lambda t: t["agreement_map"])  # max keeps the first of equals: the preferred order
    settings["calibrate_method"] = best["method"]
    settings.pop("percentile", None)
    if best["percentile"] is not None:
        settings["percentile"] = best["percentile"]
    record = {"halves": [len(h) for h in halves], "measure_files": [[str(f) for f in h] for h in halves[::-1]],
              "backend": runtime.name, "metric": "agreement mAP@[.5:.95] with the FP32 model's detections, mean of "
              "the two folds", "tried": tried, "chosen": best["calibration"]}
    settings["calibration_strategy"] = record
    log(f"calibration chosen: {best['calibration']} (mean agreement mAP {best['agreement_map']:.4f})")
    return record


def _folds(samples: FeedSamples, halves: tuple[list, list], fp32: ModelSource, runtime: BackendSpec,
           work: Path) -> list[tuple[FeedSamples, object]]:
    """(the calibrating half's samples, the other half labelled by the FP32 model on `runtime`), both ways round."""
    import copy

    from fastdet_cli.agreement import labelled

    folds = []
    for k, (calib, measured) in enumerate((halves, halves[::-1])):
        subset = copy.copy(samples)
        subset.files = calib
        folder = work / f"strategy_measure_{k}"
        folder.mkdir()
        for i, f in enumerate(measured):
            (folder / f"{i:04d}_{Path(f).name}").symlink_to(Path(f).resolve())
        folds.append((subset, labelled(str(folder), fp32, runtime)))
    return folds


def _trial_settings(settings: dict, method: str, percentile: float | None) -> dict:
    """`settings` with the calibration `method` (at `percentile`, for Percentile)."""
    trial = {k: v for k, v in settings.items() if k != "percentile"}
    trial["calibrate_method"] = method
    if percentile is not None:
        trial["percentile"] = percentile
    return trial


def _fold_score(pre: Path, subset: FeedSamples, dataset, trial: dict, post: list[str], stats: Statistics, part: int,
                folder: Path, fp32: ModelSource, note: dict, runtime: BackendSpec) -> float:
    """Agreement mAP on `dataset` of the model calibrated with `trial` on half `part` (`subset`), run on `runtime`."""
    import os

    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.runtime.base import RunnerOptions

    folder.mkdir()
    quantize(pre, folder / "model.onnx", subset, trial, post, stats=stats, part=part)
    write_model_dir(fp32, folder / "model.onnx", folder, note)
    with detector(folder, runtime, RunnerOptions(threads=os.cpu_count() or 1)) as det:
        score = round(coco_evaluate(det, dataset).map, 4)
    shutil.rmtree(folder, ignore_errors=True)
    return score
