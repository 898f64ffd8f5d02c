"""Calibration statistics gathered once per compress, for every form and every calibration tried.

ONNX Runtime's `quantize_static` runs the calibration images through the model and builds a histogram of every
tensor it will quantize each time it is called: 43 s of a 45 s quantization of the real-weight PicoDet (19 pages,
2026-12-06, Zen 4), repeated for each calibration `auto` tries, for both halves of the images, and for each form
(nine times per form). The histograms hold everything MinMax and every Percentile level need (their min, max and
counts), so `Statistics` gathers them once — for all the images and for each half at the same pass — and hands
`quantize_static` the ranges it would have computed (its calibration cache). A form whose graph needs a tensor the
first graph did not have (another op-type set, another graph) gets its own pass.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_BINS = 2048  # ORT's own for Percentile (create_calibrator)
METHODS = ("MinMax", "Percentile")  # what the histograms answer; Entropy and Distribution calibrate themselves


@dataclass
class _Pass:
    symmetric: bool
    tensors: frozenset[str]
    collectors: tuple  # HistogramCollector for all the images, then one per half
    channels: tuple  # {tensor: (lowest, highest) per channel (axis 1)} for all the images, then one per half


def tensors_to_calibrate(graph: Path, op_types: list[str]) -> frozenset[str]:
    """The float tensors ORT's calibrator would gather for `graph` quantizing `op_types`."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater

    with tempfile.TemporaryDirectory(prefix="fastdet-calib-") as tmp:
        cal = HistogramCalibrater(graph, op_types, augmented_model_path=str(Path(tmp) / "a.onnx"))
        return frozenset(cal.select_tensors_to_calibrate(cal.model)[0])


class Statistics:
    """Histograms of the calibration images' activations, per graph kind, gathered on first use. `halves` splits
    the images as `calibration_method: auto` does (each half calibrates, the other measures)."""

    def __init__(self, samples, log=print):
        self.samples = samples
        files = list(samples.files)
        half = (len(files) + 1) // 2
        self.parts = (list(range(half)), list(range(half, len(files))))
        self._passes: list[_Pass] = []
        self._needed: dict[tuple, frozenset[str]] = {}  # (graph, its mtime, op types) → tensors to calibrate
        self.log = log
        self.gathered = 0  # passes over the images (compress_report: how often the images were run)

    def supports(self, method: str) -> bool:
        return method in METHODS

    def ranges(self, graph: Path, op_types: list[str], symmetric: bool, method: str, percentile: float | None = None,
               part: int | None = None):
        """ORT's TensorsData for `method` on all the images (`part` None) or on half `part` (0 or 1)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        key = (str(graph), Path(graph).stat().st_mtime_ns, tuple(op_types))
        if key not in self._needed:  # a shape-inferred load of the graph: once per graph
            self._needed[key] = tensors_to_calibrate(graph, op_types)
        needed = self._needed[key]
        found = next((p for p in self._passes if p.symmetric == symmetric and needed <= p.tensors), None)
        if found is None:
            found = self._gather(graph, op_types, symmetric, needed)
        collector = found.collectors[0 if part is None else 1 + part]
        hist = collector.histogram_dict
        if method == "MinMax":
            lo_hi = {}
            for t in needed:
                lo, hi = hist[t][2], hist[t][3]
                if symmetric:
                    m = max(abs(lo), abs(hi))
                    lo, hi = -m, m
                lo_hi[t] = (lo, hi)
        elif method == "Percentile":
            collector.percentile = float(percentile)
            with contextlib.redirect_stdout(io.StringIO()):
                computed = collector.compute_percentile()
            lo_hi = {t: computed[t][:2] for t in needed}
        else:
            raise ValueError(f"{method}: the histograms answer {', '.join(METHODS)} only")
        data = {t: TensorData(lowest=np.asarray(lo, np.float32), highest=np.asarray(hi, np.float32))
                for t, (lo, hi) in lo_hi.items()}
        return TensorsData(getattr(CalibrationMethod, method), data)

    def channel_ranges(self, graph: Path, op_types: list[str], tensors, part: int | None = None) -> dict:
        """{tensor: (lowest, highest) per channel (axis 1)} of `tensors` (among those `graph` calibrates for
        `op_types`) on all the images (`part` None) or on half `part`: min and max, from the pass that gathered
        the histograms (compress/depthwise.py uses them)."""
        wanted = frozenset(tensors)
        found = next((p for p in self._passes if wanted <= p.tensors), None)
        if found is None:
            key = (str(graph), Path(graph).stat().st_mtime_ns, tuple(op_types))
            if key not in self._needed:
                self._needed[key] = tensors_to_calibrate(graph, op_types)
            found = self._gather(graph, op_types, False, self._needed[key] | wanted)
        table = found.channels[0 if part is None else 1 + part]
        return {t: table[t] for t in wanted if t in table}

    def _gather(self, graph: Path, op_types: list[str], symmetric: bool, needed: frozenset[str]) -> _Pass:
        """One pass of the images through `graph` with every tensor to calibrate as an output; each half's outputs
        go into that half's histograms and the all-images ones (tensors split over two threads: numpy's
        histogram releases the GIL in its inner loops)."""
        from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector

        from fastdet_cli import interrupt

        self.log(f"calibration statistics: {len(self.samples)} images through the model, histograms of "
                 f"{len(needed)} tensors (gathered once for every calibration and form that needs them)")
        collectors = tuple(HistogramCollector("percentile", symmetric, NUM_BINS, 128, 99.99, "same")
                           for _ in range(3))
        channels: tuple[dict, dict, dict] = ({}, {}, {})
        with tempfile.TemporaryDirectory(prefix="fastdet-calib-") as tmp:
            cal = HistogramCalibrater(graph, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                      symmetric=symmetric, num_bins=NUM_BINS)
            cal.augment_graph()
            cal.create_inference_session()
            session = cal.infer_session
            names = [o.name for o in session.get_outputs()]
            wanted = [n for n in names if n in cal.tensors_to_calibrate]
            inputs = {i.name for i in session.get_inputs()}
            with ThreadPoolExecutor(2) as pool:
                for k, part in enumerate(self.parts):
                    merged: dict[str, list] = {n: [] for n in wanted}
                    for i in part:
                        feed = {n: v[None] for n, v in self.samples[i].items() if n in inputs}
                        outs = dict(zip(names, session.run(None, feed)))
                        for n in wanted:
                            merged[n].append(outs[n].copy() if n in inputs else outs[n])
                        interrupt.check()
                    if not part:
                        continue
                    for n, arrays in merged.items():  # per-channel min/max of 4-D tensors (NCHW: axis 1)
                        if arrays[0].ndim == 4:
                            lo = np.min([a.min(axis=(0, 2, 3)) for a in arrays], axis=0)
                            hi = np.max([a.max(axis=(0, 2, 3)) for a in arrays], axis=0)
                            _widen(channels[0], n, lo, hi)
                            _widen(channels[1 + k], n, lo, hi)
                    keys = sorted(merged, key=lambda n, m=merged: -m[n][0].size)  # the biggest spread over both
                    shares = [{n: merged[n] for n in keys[j::2]} for j in range(2)]
                    with contextlib.redirect_stdout(io.StringIO()):  # collect() prints its progress
                        for c in (collectors[0], collectors[1 + k]):
                            list(pool.map(c.collect, shares))
        self.gathered += 1
        p = _Pass(symmetric, frozenset(wanted), collectors, channels)
        self._passes.append(p)
        return p


def _widen(table: dict, name: str, lo, hi) -> None:
    """table[name] = the per-channel (lowest, highest) so far, widened by (lo, hi)."""
    old = table.get(name)
    table[name] = (lo, hi) if old is None else (np.minimum(old[0], lo), np.maximum(old[1], hi))
