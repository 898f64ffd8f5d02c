"""QAT from calibrated activation scales, held there: the weights learn to live with PTQ-quality ranges.

ACT's quantization-aware training estimates each activation's range as a moving average of batch abs-maxes,
starting from a prior of 1.0. On a hard-swish network whose activations have rare large outliers (the real-weight
PicoDet, LCNet) that range is far too wide for the bulk of the values: measured on its held-back calibration pages,
the all-INT8 program with those ranges and the FP32 weights agreed with FP32 at 0.07 (agreement mAP), while a
percentile calibration of the same ranges keeps most boxes (issue 29: the all-INT8 PTQ model kept 66%).

So fastdet calibrates each activation's threshold on the FP32 program (the `percentile` of |x| on each training
image, averaged over the images), tries a few percentiles on the held-back images at step 0 and keeps the one that
agrees best with FP32 (the best calibration found), and holds the scales there for the whole run: before every step
the quantize op's moving-average state is set so its update stays at the calibrated value (state S, accum S · c,
S = 1e6: the batch's own max moves it by less than 1e-6 of its weight). `QuantAware.moving_rate` cannot do it:
in Paddle's source the quantize_linear training kernel passes a constant 0.9 to its moving average.
Weights keep their per-channel abs-max scales, recomputed at each step from the weights themselves.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PERCENTILES = (99.9, 99.99, 99.999, 100.0)
HOLD = 1e6
CALIBRATION_IMAGES = 8


class HeldScales:
    """The activation quantizers of ACT's training program, held at calibrated thresholds (module docstring).
    `capture` (a wrapper of ACT's train loop) finds the program; `before_step` runs before every step."""

    def __init__(self, source_dir: Path, samples, metric: Callable | None, log=print):
        self.source_dir, self.samples, self.metric, self.log = source_dir, samples, metric, log
        self.quantizers: dict[str, tuple[str, str, str]] = {}  # activation → (scale, state, accum) variables
        self.weights: dict[str, tuple[str, int]] = {}  # weight → (scale variable, channel axis)
        self.thresholds: dict[str, float] | None = None
        self.trial: dict[str, float] = {}  # percentile → agreement on the held-back images at step 0
        self.percentile: float | None = None
        self.exe = self.test_program = self.feed_names = self.fetch_list = None

    @contextmanager
    def capture(self):
        """ACT's `_start_train(train_program_info, test_program_info, ...)` wrapped to read its programs."""
        from paddleslim.auto_compression.compressor import AutoCompression

        original = AutoCompression._start_train
        held = self

        def start_train(ac, train_info, test_info, *args, **kwargs):
            held.attach(train_info.program, ac._exe, test_info)
            return original(ac, train_info, test_info, *args, **kwargs)

        AutoCompression._start_train = start_train
        try:
            yield self
        finally:
            AutoCompression._start_train = original

    def attach(self, program, exe, test_info) -> None:
        prog = getattr(program, "_program", program)
        persistable = {v.name for v in prog.list_vars() if v.persistable}
        for op in prog.global_block().ops:
            if op.type != "quantize_linear":
                continue
            x = op.input("X")[0]
            if x in persistable:  # a weight: its per-channel scale (the train step recomputes it)
                self.weights[x] = (op.input("Scale")[0], int(op.attr("quant_axis")))
            elif "InState" in op.input_names and op.input("InState"):
                self.quantizers[x] = (op.input("Scale")[0], op.input("InState")[0], op.input("InAccum")[0])
        self.exe, self.test_program = exe, test_info.program
        self.feed_names, self.fetch_list = test_info.feed_target_names, test_info.fetch_targets

    def before_step(self) -> None:
        if not self.quantizers:
            return
        if self.thresholds is None:
            self.thresholds = self._same_on_every_rank(self._calibrate())
        _set_scales(self.thresholds, self.quantizers)

    def _same_on_every_rank(self, thresholds: dict[str, float]) -> dict[str, float]:
        """Under paddle.distributed.launch each rank calibrates on its own share: the ranges held are their mean."""
        from fastdet_cli import distributed

        if distributed.world().size == 1:
            return thresholds
        import paddle

        held = {x: q for x, q in self.quantizers.items() if x in thresholds}
        _set_scales(thresholds, held)
        distributed.average_in_scope([scale for scale, _, _ in held.values()])
        scope = paddle.static.global_scope()
        return {x: float(np.array(scope.find_var(scale).get_tensor())[0]) for x, (scale, _, _) in held.items()}

    def _calibrate(self) -> dict[str, float]:
        by_percentile = activation_thresholds(self.source_dir, self.samples, sorted(self.quantizers), PERCENTILES)
        chosen = 99.99
        if self.metric is not None and self.test_program is not None:
            _set_weight_scales(self.weights)  # the test program reads them; no train step has written them yet
            for p in PERCENTILES:
                _set_scales(by_percentile[p], self.quantizers)
                self.trial[str(p)] = round(float(self.metric(self.exe, self.test_program, self.feed_names,
                                                             self.fetch_list)), 4)
            chosen = max(PERCENTILES, key=lambda p: self.trial[str(p)])
            self.log("QAT activation ranges: percentile of |x| → agreement with FP32 on the held-back images at "
                     "step 0: " + ", ".join(f"{p:g}: {self.trial[str(p)]:.3f}" for p in PERCENTILES)
                     + f"; {chosen:g} kept")
        self.percentile = chosen
        return by_percentile[chosen]

    def record(self) -> dict:
        return {"activation_scales": "calibrated on the FP32 program and held (qat_scales.py)",
                "percentile": self.percentile, "agreement_at_step_0": self.trial,
                "activations": len(self.quantizers)}


def _set_scales(thresholds: dict[str, float], quantizers: dict[str, tuple[str, str, str]]) -> None:
    import paddle

    scope, place = paddle.static.global_scope(), paddle.CPUPlace()
    for x, (scale, state, accum) in quantizers.items():
        if x not in thresholds:  # not an FP32 activation (e.g. PACT's clipped copy): ACT's moving average
            continue
        c = np.float32(thresholds[x])
        for name, value in ((scale, c), (state, HOLD), (accum, HOLD * c)):
            var = scope.find_var(name)
            if var is not None:
                var.get_tensor().set(np.array([value], np.float32), place)


def _set_weight_scales(weights: dict[str, tuple[str, int]]) -> None:
    import paddle

    scope, place = paddle.static.global_scope(), paddle.CPUPlace()
    for w, (scale, axis) in weights.items():
        arr = np.abs(np.array(scope.find_var(w).get_tensor()))
        per_channel = arr.max(axis=tuple(i for i in range(arr.ndim) if i != axis)) if axis >= 0 else arr.max()
        scope.find_var(scale).get_tensor().set(np.atleast_1d(per_channel).astype(np.float32), place)


def activation_thresholds(model_dir: Path, samples, names: list[str],
                          percentiles=PERCENTILES) -> dict[float, dict[str, float]]:
    """percentile → activation → the mean over up to CALIBRATION_IMAGES images of that percentile of |x|, run
    on the FP32 program in `model_dir` (static mode is on: this runs inside ACT). Names the program does not have
    (e.g. PACT's clipped copies) are left out."""
    import paddle

    from fastdet_cli.paddle_program import paddle_model_files

    pdmodel, pdiparams = paddle_model_files(model_dir)
    scope = paddle.static.Scope()
    exe = paddle.static.Executor(paddle.CPUPlace())
    n = min(CALIBRATION_IMAGES, len(samples))
    with paddle.static.scope_guard(scope):
        prog, feeds, _ = paddle.static.load_inference_model(
            str(pdmodel.parent), exe, model_filename=pdmodel.name, params_filename=pdiparams.name)
        names = [name for name in names if prog.global_block().has_var(name)]
        sums = {p: dict.fromkeys(names, 0.0) for p in percentiles}
        for i in range(n):
            item = samples[i]
            outs = exe.run(prog, feed={k: item[k][None] for k in feeds}, fetch_list=names)
            for name, arr in zip(names, outs):
                values = np.percentile(np.abs(np.asarray(arr)), percentiles)
                for p, v in zip(percentiles, values):
                    sums[p][name] += float(v)
    return {p: {name: max(s / n, 1e-6) for name, s in per.items()} for p, per in sums.items()}
