"""QAT of the ONNX Runtime engine (`Global.engine: onnxruntime` with a `QuantAware:` section): quantization-aware
training with distillation of the INT8 graph each deploy target runs, starting from that target's PTQ model.

Why not Paddle's QAT for these forms: Paddle's QAT program holds one symmetric range per activation tensor, while
what made OpenVINO's all-INT8 form accurate (compress/depthwise.py, smooth.py, bias_correction.py) is ranges per
channel on the depthwise inputs, asymmetric uint8 activations and corrected biases — a program that cannot hold them
trains a different model (measured on the real-weight PicoDet: Paddle QAT 87% of the FP32 boxes kept, this form's
PTQ 97%). So the PTQ graph itself is trained (compress/qdq_graph.py runs it in Paddle's dygraph): the
convolutions' weights and biases move, rounded on every pass (straight-through), and so do the activations' scales
from their calibrated values (LSQ; zero points held; `Global.qat_hold_scales: true` holds them), to match the FP32
model's decoded outputs (compress/distill.py's losses: sigmoid scores by per-class KL, DFL distributions by KL over
their bins weighted by the teacher's scores) on the user's unlabeled images, flipped and zoomed at random
(compress/qat_data.py). The FP32 teacher runs on ONNX Runtime. With `learn_rounding` (`Global.qat_learn_rounding`,
default true) epoch 1 comes first and is not a pass of Adam over the whole graph: each convolution's weights are
rounded up or down, convolution by convolution, to fit its FP32 output (compress/rounding.py, AdaRound); it is
measured like an epoch, and end-to-end training goes on from it, or from the PTQ model when it raised the held-back
loss.

What is written is always a measured model: after each epoch the trained weights are rounded into the graph and its
agreement with FP32 is measured on the held-back slice of the calibration images on the form's own runtime; the
best epoch is kept — the PTQ model itself (epoch 0, calibrated on every calibration image: the slice is left out of
the training only) included, so QAT never writes a model that measured worse than the PTQ model `--method ptq`
makes. Ties (a few held-back images often agree fully) go to the lower distillation loss on the held-back images.
Training itself follows the held-back distillation loss (steadier than the agreement of a few images): an epoch that
raised it sends training back to the weights of the lowest loss at BACKOFF × the learning rate (a step too far is
undone rather than built on), and `patience` counts the epochs that improved neither measurement.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEFAULT_EPOCHS = 4
DEFAULT_BATCH = 4  # images per step
DEFAULT_PATIENCE = 2  # epochs without a better measurement before training stops
DEFAULT_LR = 3e-4  # Adam, in grid steps (QdqGraph's units). Measured on the real-weight PicoDet (calib halves,
# 2026-12-06): 3e-3 raised the held-back loss 0.0157 → 0.027 in one epoch, 5e-2 to 2.8; 3e-4 moved it 0.0157 →
# 0.0162 → 0.0170 — its INT8 graph is chaotic in its roundings (docs/compress.md)
BACKOFF = 0.5  # an epoch that raised the held-back loss: training goes on from the weights of the lowest loss (and
# fresh Adam moments) with the learning rate times this (1: off; the run goes on from where it is)
_SHAPE_OPS = {"Transpose", "Reshape", "Concat", "Split", "Identity", "Flatten", "Squeeze", "Unsqueeze", "Slice"}


def output_kinds(model) -> dict[str, str]:
    """{graph output: scores | distribution | boxes | other} (compress/distill.py's kinds, read from an ONNX
    graph): a sigmoid seen through shape-only ops (or a product / square root of such) is a score map, a last axis
    of 4 decoded boxes (relative L1), of 4 · n (n ≥ 2) DFL box distributions."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def probability(name: str, depth: int = 0) -> bool:
        n = producer.get(name)
        if n is None or depth > 40:
            return False
        if n.op_type == "Sigmoid":
            return True
        if n.op_type in _SHAPE_OPS or n.op_type in ("Mul", "Sqrt"):
            ins = [i for i in n.input[:1 if n.op_type in _SHAPE_OPS else 2] if i in producer]
            return bool(ins) and all(probability(i, depth + 1) for i in ins)
        return False

    kinds = {}
    for o in model.graph.output:
        last = o.type.tensor_type.shape.dim[-1].dim_value if o.type.tensor_type.shape.dim else 0
        kinds[o.name] = ("scores" if probability(o.name) else "boxes" if last == 4 else
                         "distribution" if last and last % 4 == 0 and last // 4 >= 2 else "other")
    return kinds


class _Loss:
    """The distillation loss of a student's outputs against the teacher's (numpy), summed over the outputs."""

    def __init__(self, model):
        self.kinds = output_kinds(model)
        shapes = {o.name: tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output}
        # a score map's classes: the shorter of its last two axes ([N, anchors, C] or [N, C, anchors])
        self.classes = {n: min(v for v in shapes[n][-2:] if v) for n, k in self.kinds.items()
                        if k == "scores" and any(shapes[n][-2:])}
        scores = {shapes[n][:-1]: n for n, k in self.kinds.items() if k == "scores"}
        self.partner = {n: scores.get(shapes[n][:-1]) for n, k in self.kinds.items() if k == "distribution"}

    def __call__(self, student: dict, teacher: dict):
        import paddle

        from fastdet_cli.compress.distill import dfl_kl, relative_l1, sigmoid_kl

        t = {k: paddle.to_tensor(v) for k, v in teacher.items()}
        total = 0.0
        for name, kind in self.kinds.items():
            if kind == "scores":
                total = total + sigmoid_kl(t[name], student[name], self.classes.get(name))
            elif kind == "distribution":
                partner = self.partner.get(name)
                total = total + dfl_kl(t[name], student[name], t[partner] if partner else None)
            else:
                total = total + relative_l1(t[name], student[name])
        return total


def _teacher(fp32_path: Path):
    """The FP32 model on ONNX Runtime (every core), one image per run (a fixed batch axis is common)."""
    import os

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(str(fp32_path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    takes = {i.name for i in sess.get_inputs()}

    def run(batch: dict) -> dict:
        n = len(next(iter(batch.values())))
        outs = [sess.run(names, {k: v[i:i + 1] for k, v in batch.items() if k in takes}) for i in range(n)]
        return {name: np.concatenate([o[j] for o in outs]) for j, name in enumerate(names)}

    return run


def _student_feeds(batch: dict, graph) -> dict:
    import paddle

    takes = {i.name for i in graph.model.graph.input}
    return {k: paddle.to_tensor(v) for k, v in batch.items() if k in takes}


def train_qdq(model_path: Path, fp32_path: Path, samples, holdout, judge: Callable[[Path], float] | None,
              train: dict, augment: bool = True, batch: int = DEFAULT_BATCH, patience: int = DEFAULT_PATIENCE,
              log=print, prepared: Path | None = None, learn_scales: bool = False,
              learn_rounding: bool = False) -> dict:
    """Train the INT8 graph at `model_path` (rewritten in place with the best measured epoch) against the FP32
    model at `fp32_path` on `samples` (FeedSamples); `holdout`: FeedSamples of the held-back images (or None) and
    `judge(model_path) -> agreement` measured on them on the form's runtime. `train`: TrainConfig (epochs,
    learning_rate). `batch`: images per step (their gradients summed one image at a time: memory of one). The
    learning rate follows a cosine from `learning_rate` to 0 over the run; training stops after `patience` epochs
    without a better measurement (0: never). `prepared`: the FP32 graph that was quantized; its weights are where
    training starts (QdqGraph's `latent`), and the FP32 outputs `learn_rounding` fits (epoch 1). Returns the record
    for the report."""
    import onnx
    import paddle

    from fastdet_cli.compress.qat_data import TrainBatches
    from fastdet_cli.compress.qdq_graph import QdqGraph
    from fastdet_cli.onnx_graph import conv_weights

    t0 = time.perf_counter()
    paddle.set_device("cpu")
    model = onnx.load(str(model_path))
    fp32_graph = onnx.load(str(prepared)) if prepared and prepared.exists() else None
    latent = None if fp32_graph is None else conv_weights(fp32_graph)
    graph = QdqGraph(model, latent, learn_scales)
    loss_of, teacher = _Loss(model), _teacher(fp32_path)
    epochs, lr = int(train.get("epochs", DEFAULT_EPOCHS)), float(train.get("learning_rate", DEFAULT_LR))
    steps = max(1, epochs * -(-len(samples) // batch))
    held = [{k: v[None] for k, v in holdout[i].items()} for i in range(len(holdout or ()))]
    held_teacher = [teacher(f) for f in held]
    batches = TrainBatches(samples, 1, augment, seed=0)
    log(f"QAT of the INT8 graph: {_trained(graph)}, {epochs} epoch(s) of {len(samples)} image(s), {batch} per "
        f"step, Adam lr {lr:g} (cosine); distilled outputs: "
        + ", ".join(f"{k} {n}" for k, n in Counter(loss_of.kinds.values()).items()))

    def measure(g, epoch: int, loss: float | None) -> dict:
        return _measure(g, model, model_path, judge, held, held_teacher, loss_of, epoch, loss)

    progress = _Progress(graph, measure(graph, 0, None))
    log(f"QAT epoch 0 (the PTQ model): {_shown(progress.history[-1])}")
    rounding = None
    if learn_rounding and fp32_graph is not None:
        graph, rounding = _rounding_stage(model, fp32_graph, latent, samples, graph, progress, log,
                                          lambda g: measure(g, 1, None))
    opt = _Optimizer(graph.parameters, lr, steps)
    first = 2 if rounding else 1
    for epoch in range(first, first + epochs):
        h = measure(graph, epoch, _epoch(graph, batches, loss_of, teacher, opt, batch, len(samples)))
        if _after_epoch(h, progress, opt, graph, first + epochs - 1, patience, log):
            break
    chosen = progress.chosen()
    _restore(graph, progress.best)
    graph.write_back()
    onnx.save(model, str(model_path))
    log(f"QAT keeps epoch {chosen['epoch']}" + (" (the PTQ model: no epoch measured better)"
                                                 if chosen["epoch"] == 0 else ""))
    return {"epochs": epochs, "learning_rate": lr, "batch": batch, "steps": steps, "chosen_epoch": chosen["epoch"],
            "history": progress.history, "rounding": rounding, "distilled": loss_of.kinds,
            "parameters": len(graph.params), "learned_scales": len(graph.scales), "augment": augment,
            "fp32_start_weights": graph.latent_used, "seconds": round(time.perf_counter() - t0, 1)}


def _after_epoch(h: dict, progress, opt, graph, last: int, patience: int, log) -> bool:
    """Epoch `h` recorded, training sent back to the lowest held-back loss when it rose (BACKOFF); True: stop."""
    epoch = h["epoch"]
    log(f"QAT epoch {epoch}/{last}: {_shown(h)}")
    if progress.add(h, opt.factor) and BACKOFF < 1 and epoch < last:
        _restore(graph, progress.lowest)  # a step too far: undone, shorter steps from there
        opt.back_off()
        log(f"QAT goes on from epoch {progress.lowest_epoch}'s weights (lowest held-back loss) at {opt.factor:g}× "
            "the learning rate")
    if patience and epoch < last and progress.stalled() >= patience:
        log(f"QAT stops: no better measurement in {patience} epochs")
        return True
    return False


def _rounding_stage(model, fp32_graph, latent: dict, samples, graph, progress, log, measure):
    """Epoch 1: the roundings learned convolution by convolution (compress/rounding.py) on the training images,
    against `fp32_graph` (the graph quantized; `latent` its weights); measured like an epoch. End-to-end training
    goes on from it or, when it raised the held-back loss, from the PTQ model. Returns (the graph of the model now,
    the rounding's record)."""
    from fastdet_cli.compress.qdq_graph import QdqGraph
    from fastdet_cli.compress.rounding import DEFAULT_IMAGES, learn_roundings
    from fastdet_cli.compress.samples import quarter_progress, spread_feeds

    t0 = time.perf_counter()
    feeds = spread_feeds(samples, DEFAULT_IMAGES)
    log(f"QAT epoch 1: roundings learned convolution by convolution on {len(feeds)} image(s) (AdaRound)")
    record = learn_roundings(model, fp32_graph, feeds, quarter_progress(log, "learned rounding"))
    record["seconds"] = round(time.perf_counter() - t0, 1)
    new = QdqGraph(model, latent, bool(graph.scales))
    progress.graph = new
    h = measure(new)
    h["stage"] = "rounding"
    log(f"QAT epoch 1 (learned rounding, {record['weights_changed']} weights rounded the other way, relative error "
        f"{record['relative_error_nearest']:.4g} → {record['relative_error']:.4g}): {_shown(h)}")
    if progress.add(h, None):  # it raised the held-back loss: training starts from the PTQ model's graph (its
        progress.graph = graph  # write-back puts the PTQ integers back)
        log("QAT goes on from the PTQ model (the learned rounding raised the held-back loss)")
        return graph, record
    return new, record


def _trained(graph) -> str:
    return (f"{len(graph.params)} weights and biases trained ("
            + (f"{len(graph.scales)} activation scales learned; " if graph.scales else "scales held; ")
            + f"{graph.latent_used} weights start from their FP32 values)")


class _Optimizer:
    """Adam on `parameters`, its learning rate a cosine from `lr` to 0 over `steps`; `back_off()` lowers the cosine
    by BACKOFF and starts fresh moments (the weights were set back: the old moments point where they came from)."""

    def __init__(self, parameters, lr: float, steps: int):
        import paddle

        self.parameters, self.factor = parameters, 1.0
        self.schedule = paddle.optimizer.lr.LambdaDecay(
            lr, lambda step: self.factor * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
        self.adam = self._adam()

    def _adam(self):
        import paddle

        return paddle.optimizer.Adam(learning_rate=self.schedule, parameters=self.parameters)

    def step(self) -> None:
        self.adam.step()
        self.adam.clear_grad()
        self.schedule.step()

    def back_off(self) -> None:
        self.factor *= BACKOFF
        self.schedule.step(self.schedule.last_epoch)  # the rate now, not at the next step
        self.adam = self._adam()


def _epoch(graph, batches, loss_of, teacher, opt: _Optimizer, batch: int, n: int) -> float:
    """One pass over the training images, a step every `batch` images; the mean distillation loss."""
    losses = []
    for i, one in enumerate(batches(), 1):
        loss = loss_of(graph(_student_feeds(one, graph)), teacher(one)) / batch
        loss.backward()
        losses.append(float(loss) * batch)
        if i % batch == 0 or i == n:
            opt.step()
    return float(np.mean(losses))


class _Progress:
    """The epochs measured so far and the weights worth going back to. Written: the best measured epoch (`_key`:
    agreement with FP32 on the held-back images, then their distillation loss; nothing held back: the last).
    Training follows the held-back loss, a steadier signal than the agreement of a few images: an epoch that raised
    it above the lowest so far is to be undone (`add` says so); patience counts epochs that improved neither."""

    def __init__(self, graph, first: dict):
        self.graph, self.history = graph, [first]
        self.best = self.lowest = _snapshot(graph)
        self.lowest_epoch = self.improved = 0

    def add(self, h: dict, lr_factor: float | None) -> bool:
        """Record epoch `h` (trained at `lr_factor` × the learning rate; None: not by Adam); True when its held-back
        loss rose."""
        h["lr_factor"] = lr_factor
        best, low = self.chosen(), self.history[self.lowest_epoch]["holdout_loss"]
        self.history.append(h)
        if _key(h) > _key(best):
            self.best, self.improved = _snapshot(self.graph), h["epoch"]
        if low is None or h["holdout_loss"] is None:
            return False
        if h["holdout_loss"] < low:
            self.lowest, self.lowest_epoch, self.improved = _snapshot(self.graph), h["epoch"], h["epoch"]
            return False
        return True

    def chosen(self) -> dict:
        return max(self.history, key=_key)

    def stalled(self) -> int:
        return self.history[-1]["epoch"] - self.improved


def _key(h: dict) -> tuple:
    measured = h["agreement"] is not None or h["holdout_loss"] is not None
    return (h["agreement"] if h["agreement"] is not None else 0.0,
            -h["holdout_loss"] if h["holdout_loss"] is not None else 0.0, 0 if measured else h["epoch"])


def _shown(h: dict) -> str:
    parts = []
    if h["train_loss"] is not None:
        parts.append(f"distillation loss {h['train_loss']:.4g}")
    if h["holdout_loss"] is not None:
        parts.append(f"held-back loss {h['holdout_loss']:.4g}")
    if h["agreement"] is not None:
        parts.append(f"agreement with FP32 on the held-back images {h['agreement']:.3f}")
    return ", ".join(parts) or "no held-back images"


def _measure(graph, model, model_path: Path, judge, held, held_teacher, loss_of, epoch: int,
             train_loss: float | None) -> dict:
    """The epoch's record: the held-back loss, and the agreement of the graph with these weights, written."""
    import onnx
    import paddle

    hl = None
    if held:
        with paddle.no_grad():
            hl = float(np.mean([float(loss_of(graph(_student_feeds(f, graph)), t)) for f, t in
                                zip(held, held_teacher)]))
    agreement = None
    if judge is not None:
        graph.write_back()
        onnx.save(model, str(model_path))
        agreement = round(float(judge(model_path)), 4)
    return {"epoch": epoch, "train_loss": None if train_loss is None else round(train_loss, 5),
            "holdout_loss": None if hl is None else round(hl, 5), "agreement": agreement}


def _snapshot(graph) -> list[np.ndarray]:
    return [p.numpy().copy() for p in graph.parameters]


def _restore(graph, values: list[np.ndarray]) -> None:
    for p, v in zip(graph.parameters, values):
        p.set_value(v)
