"""Quantization-aware training with distillation: PaddleSlim's AutoCompression (ACT). Unlike FastDeploy, an
eval callback is passed when an eval dataset is given, so `TrainConfig.target_metric` is really checked."""
from __future__ import annotations

import copy
import os
import logging
import re
from contextlib import contextmanager, nullcontext
from pathlib import Path
from collections.abc import Callable

import numpy as np

from fastdet_cli.compress.samples import FeedSamples
from fastdet_cli.compress.config import CompressConfig
from fastdet_cli.det.model import ModelSource

# FastDeploy's Global keys that are its own business, not ACT's (ACT rejects or misreads them)
# QAT's defaults where the YAML says nothing (issue 33): Adam (the distillation losses differ in scale by orders of
# magnitude between models; Adam's steps do not), a cosine decay from 3e-5, 300 steps, an agreement check on the
# held-back images every 20 (the best kept; 3 checks without progress stop the run), batches of at most 4 with at
# least 8 steps per epoch
DEFAULT_LR, DEFAULT_ITER, DEFAULT_EVAL_EVERY = 3e-5, 300, 20
_FD_ONLY_GLOBAL = {"model_dir", "format", "model_filename", "params_filename", "qat_image_path", "ptq_image_path",
                   "image_path", "qat_preprocess", "ptq_preprocess", "preprocess", "arch", "qat_batch_size",
                   "eval_dataset", "image_limit", "deploy_backend", "qat_augment",
                   "qat_patience", "qat_hold_scales", "qat_learn_rounding"}


def act_config(cfg: CompressConfig, feed_names: list[str], nodes: list | None = None) -> dict:
    """The config dict handed to AutoCompression. `nodes` (distill.DistillNode): what is distilled when the YAML
    names no `Distillation.node`, each with its own loss unless `Distillation.loss` names one for all."""
    from fastdet_cli.compress.distill import act_distillation

    g = {k: v for k, v in cfg.raw.get("Global", {}).items() if k not in _FD_ONLY_GLOBAL}
    g["input_list"] = feed_names
    quant = {k: v for k, v in cfg.quant.items() if k != "skip_tensor_list"}  # fastdet's: applied to the program
    quant.setdefault("onnx_format", True)
    quant.setdefault("quantize_op_types", ["conv2d", "depthwise_conv2d"])
    train = dict(cfg.train)
    train.setdefault("train_iter", DEFAULT_ITER)
    train.setdefault("eval_iter", min(DEFAULT_EVAL_EVERY, train["train_iter"]))
    train.setdefault("logging_iter", 10)  # ACT's default, explicit: how often the distillation loss is recorded
    train.setdefault("learning_rate", {"type": "CosineAnnealingDecay", "learning_rate": DEFAULT_LR,
                                       "T_max": train["train_iter"]})
    train.setdefault("optimizer_builder", {"optimizer": {"type": "Adam"}})
    distill = dict(cfg.distill)
    distill.setdefault("alpha", 1.0)
    if "node" not in distill and nodes:
        picked = act_distillation(nodes, distill["alpha"])
        if "loss" in distill:  # the user's loss on every default node
            picked = {"node": [n.name for n in nodes], "loss": distill["loss"], "alpha": float(distill["alpha"])}
        distill.update(picked)
    distill.setdefault("loss", "l2")
    return {"Global": g, "Distillation": distill, "QuantAware": quant, "TrainConfig": train}


ACT_LOGGER = "paddleslim.auto_compression.compressor"
_LOSS_LINE = re.compile(r"Total iter: (\d+), epoch: \d+, batch: \d+, loss: \[?\s*([^\s\]]+)")


class LossLog(logging.Handler):
    """The distillation loss during `AutoCompression.compress()`: [[iteration, loss], ...]. ACT fetches the loss
    at every step but hands it only to its logger ("Total iter: N, epoch: E, batch: B, loss: L soft_label: L", when
    the epoch's batch index is a multiple of `TrainConfig.logging_iter`), so this handler on that logger reads it
    from there (iteration N is counted from 0; its loss is the forward pass before step N's update)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.values: list[list] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = _LOSS_LINE.search(record.getMessage())
        if found:
            try:
                self.values.append([int(found[1]), float(found[2])])
            except ValueError:  # a format this parser does not know: no record rather than a failed run
                pass

    def __enter__(self) -> LossLog:
        logging.getLogger(ACT_LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(ACT_LOGGER).removeHandler(self)


@contextmanager
def quick_ir_links():
    """Paddle 2.6's IrGraph.link_to, update_input_link and update_output_link assert that their nodes are in
    `graph.nodes()`, a Python set of every node built anew at each call: quadratic in the program's size. ACT's
    quantization passes link every op of the training program (teacher + student + backward, ~1,700 ops on the
    embedded model), and those checks alone took ~5 of ACT's ~7 minutes (2 cores). Inside this block the three
    methods make the same edits without the check; the program ACT writes had the same ops, inputs, outputs and
    attributes as without it (only their order differed, as it does between two unpatched runs). Other Paddle
    versions are left alone (these bodies are 2.6's)."""
    import paddle
    from paddle.base.framework import IrGraph

    if not paddle.__version__.startswith("2.6."):
        yield
        return

    def update_input_link(self, old_input_node, new_input_node, op_node):
        old_input_node.remove_output(op_node)
        op_node.remove_input(old_input_node)
        new_input_node.append_output(op_node)
        op_node.append_input(new_input_node)
        op_node.rename_input(old_input_node.name(), new_input_node.name())

    def update_output_link(self, old_output_node, new_output_node, op_node):
        old_output_node.remove_input(op_node)
        op_node.remove_output(old_output_node)
        new_output_node.append_input(op_node)
        op_node.append_output(new_output_node)
        op_node.rename_output(old_output_node.name(), new_output_node.name())

    def link_to(self, node_in, node_out):
        node_in.append_output(node_out)
        node_out.append_input(node_in)

    names = ("update_input_link", "update_output_link", "link_to")
    saved = {n: IrGraph.__dict__[n] for n in names}
    for n, f in zip(names, (update_input_link, update_output_link, link_to)):
        setattr(IrGraph, n, f)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(IrGraph, n, f)


class RankSync:
    """Several CPU processes under paddle.distributed.launch: ACT uses Paddle's fleet (gradient all-reduce) only
    when it sees more than one CUDA device, so on CPUs (gloo) each rank would train on its own shard alone. After
    every step the model's parameters are averaged across ranks (`distributed.average_in_scope`): with SGD
    (weight decay included) that is exactly a step on the mean gradient; with Adam (fastdet's default) or
    Momentum each rank's moment estimates stay its own, so it is an approximation (the averaged weights stay
    identical on every rank). At each evaluation every persistable variable of the program (quantization scales
    too) is averaged, the ranks' weights are compared by digest, and rank 0's metric is broadcast so every rank
    takes the same decision (best model, early stop)."""

    def __init__(self, param_names: list[str], eval_callback: Callable | None):
        self.param_names, self.eval_callback = param_names, eval_callback
        self.steps, self.averaged, self.identical, self.evaluations = 0, 0, None, 0

    def before_step(self) -> None:
        from fastdet_cli import distributed

        if self.steps:
            self.averaged += 1
            distributed.average_in_scope(self.param_names)
        self.steps += 1

    def evaluate(self, exe, program, feed_names, fetch_list) -> float:
        from fastdet_cli import distributed

        prog = getattr(program, "_program", program)  # a CompiledProgram wraps it
        names = sorted({v.name for v in prog.list_vars() if v.persistable} | set(self.param_names))
        distributed.average_in_scope(names)
        digests = distributed.gather_strings(distributed.digest_in_scope(names))
        self.identical = len(set(digests)) == 1
        self.evaluations += 1
        metric = 0.0
        if self.eval_callback is not None and distributed.world().is_main:
            metric = float(self.eval_callback(exe, program, feed_names, fetch_list))
        return distributed.broadcast_float(metric)

    def record(self) -> dict:
        return {"parameter_averaging": "after every step (exact data parallelism with SGD)", "steps": self.steps,
                "averaged_steps": self.averaged, "evaluations": self.evaluations,
                "weights_identical_across_ranks": self.identical}


def default_batch_size(images: int) -> int:
    """At most 4 images a step, and at least 8 steps an epoch: 1 for fewer than 16 training images (a model
    with a fixed batch takes its own)."""
    return min(4, max(1, images // 8))


def run_qat(cfg: CompressConfig, source: ModelSource, samples: FeedSamples, out_dir: Path,
            metric: Callable | None, devices: str, log=print) -> dict:
    """ACT on `source`, trained on `samples`; `metric` (agreement on held-back images) chooses the weights kept
    and stops training early. Returns the settings as resolved (compress_report.json → config_resolved)."""
    from fastdet_cli import distributed
    from fastdet_cli.compress.distill import default_nodes, registered_losses
    from fastdet_cli.compress.qat_data import EarlyStop, TrainBatches
    from fastdet_cli.paddle_program import load_program, paddle_model_files, var_dims

    pdmodel, pdiparams = paddle_model_files(source.dir)
    nodes = default_nodes(pdmodel)
    config = act_config(cfg, samples.feed_names, nodes)
    g = cfg.raw.get("Global", {})
    fixed = (var_dims(load_program(pdmodel), samples.feed_names[0]) or [-1])[0]
    batch_size = int(g.get("qat_batch_size", fixed if fixed > 0 else default_batch_size(len(samples))))
    sync = _set_up_devices(devices, pdmodel, metric)
    if sync is not None:
        metric = sync.evaluate
    from paddleslim.auto_compression import AutoCompression

    held = None
    if g.get("qat_hold_scales", True):
        from fastdet_cli.compress.qat_scales import HeldScales

        held = HeldScales(source.dir, samples, None if sync else metric, log)
    loader = TrainBatches(samples, batch_size, bool(g.get("qat_augment", True)),
                          before_step=[f.before_step for f in (sync, held) if f is not None])
    with LossLog() as losses, quick_ir_links(), registered_losses(nodes), \
            (held.capture() if held else nullcontext()):
        watch = None
        if metric is not None:
            say = log if distributed.world().is_main else (lambda m: None)
            watch = metric = EarlyStop(metric, int(g.get("qat_patience", 3)), loader.stop,
                                       int(config["TrainConfig"]["eval_iter"]), losses, say)
        ac = AutoCompression(model_dir=str(source.dir), model_filename=pdmodel.name,
                             params_filename=pdiparams.name, save_dir=str(out_dir),
                             config=copy.deepcopy(config),  # ACT pops TrainConfig from it
                             train_dataloader=loader, eval_callback=metric,
                             deploy_hardware="gpu" if devices == "gpu" else None)
        ac.compress()
    config["loss_log"] = losses.values  # compress_report.json → config_resolved: did training do anything
    config["distill_nodes"] = [n.as_dict() for n in nodes]
    if watch is not None:
        config["agreement_log"] = watch.history
    if held is not None:
        config["activation_scales"] = held.record()
    if sync is not None:
        config["distributed"] = sync.record()
    _keep_model_only(out_dir)
    config["Global"]["qat_batch_size"] = batch_size
    return config


def _set_up_devices(devices: str, pdmodel: Path, metric: Callable | None) -> RankSync | None:
    """Paddle on the device; on CPU in one process every core for its kernels; several CPU processes: the rank
    synchronisation (RankSync) over `metric`."""
    import paddle

    from fastdet_cli import distributed
    from fastdet_cli.paddle_program import load_program

    paddle.set_device("gpu" if devices == "gpu" else "cpu")
    if devices != "gpu" and distributed.world().size == 1:
        from paddle.base import core

        core.set_num_threads(os.cpu_count() or 1)
    if distributed.world().size > 1 and not (devices == "gpu" and paddle.device.cuda.device_count() > 1):
        distributed.init()  # before ACT switches Paddle to static mode
        params = [v.name for b in load_program(pdmodel).blocks for v in b.vars
                  if v.persistable and v.name not in ("feed", "fetch")]
        return RankSync(params, metric)
    return None


def _keep_model_only(out_dir: Path) -> None:
    """ACT writes model.pdmodel / model.pdiparams (+ intermediate files) into save_dir: keep the model only."""
    import shutil

    for extra in out_dir.iterdir():
        if extra.is_file() and extra.name not in ("model.pdmodel", "model.pdiparams"):
            extra.unlink()
        elif extra.is_dir():
            shutil.rmtree(extra)


def program_eval_callback(source: ModelSource, dataset, limit: int | None = None) -> Callable:
    """ACT's eval_callback(exe, program, feed_names, fetch_list) → mAP@[.5:.95] on `dataset`, with the
    model's own pre- and post-processing."""
    from fastdet_cli.det.config import NmsParams
    from fastdet_cli.det.pipeline import decode_outputs
    from fastdet_cli.det.preprocess import Preprocessor
    from fastdet_cli.evaluate.coco import coco_evaluate

    pre = Preprocessor.of(source.deploy)

    def callback(exe, program, feed_names, fetch_list) -> float:
        class ProgramDetector:
            deploy = source.deploy

            def __call__(self, bgr):
                feed, info = pre(bgr)
                outs = exe.run(program, feed={n: feed[n] for n in feed_names}, fetch_list=fetch_list,
                               return_numpy=False)  # NMS outputs carry LoD, which return_numpy refuses
                return decode_outputs([np.array(o) for o in outs], info, source.deploy,
                                      source.deploy.nms or NmsParams(),
                                      "scale_factor" in feed_names)

        return coco_evaluate(ProgramDetector(), dataset, limit).map

    return callback


BN_FUSE_PASSES = ("conv_bn_fuse_pass", "depthwise_conv_bn_fuse_pass", "conv_transpose_bn_fuse_pass",
                  "conv_eltwiseadd_bn_fuse_pass", "depthwise_conv_eltwiseadd_bn_fuse_pass")


def fuse_conv_bn(source: ModelSource, out_dir: Path) -> int:
    """Write `source` with every conv + batch_norm folded into conv + bias to `out_dir` (model.pdmodel /
    model.pdiparams; the deploy config is copied), as PTQ's `optimize_model` does. Returns the batch_norm ops
    removed.

    Why QAT needs it: ACT keeps batch_norm after each quantized convolution, and paddle2onnx 1.3.1 folds that
    batch_norm into the weights' quantization scales when exporting — a channel with a negative BN scale then
    gets a wrong (negative-clipped) scale: the QAT model's INT8 ONNX found only 75% of the boxes Paddle Inference
    found on the same program. Training the BN-folded network avoids the pattern altogether."""
    import shutil

    import paddle
    from paddle.base import core
    from paddle.framework import IrGraph

    from fastdet_cli.paddle_program import load_program, op_counts, paddle_model_files, save_program

    pdmodel, pdiparams = paddle_model_files(source.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paddle.enable_static()
    try:
        scope = paddle.static.Scope()
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            prog, feeds, fetches = paddle.static.load_inference_model(
                str(source.dir), exe, model_filename=pdmodel.name, params_filename=pdiparams.name)
            graph = IrGraph(core.Graph(prog.desc), for_test=True)
            graph.safe_remove_nodes({n for n in graph.all_var_nodes() if n.is_ctrl_var()})
            graph.graph.set_not_owned("__param_scope__", scope)  # the passes rewrite the weights there
            for name in BN_FUSE_PASSES:
                core.get_pass(name).apply(graph.graph)
            fused = graph.to_program()
            block = fused.global_block()
            # the ops the passes create carry no op_role, which ACT's program clone requires
            role = core.op_proto_and_checker_maker.kOpRoleAttrName()
            for op in block.ops:
                if not op.has_attr(role):
                    op._set_attr(role, int(core.op_proto_and_checker_maker.OpRole.Forward))
            save_program(str(out_dir / "model"), fused, feeds, fetches, exe)
    finally:
        paddle.disable_static()
    shutil.copyfile(source.deploy.path, out_dir / source.deploy.path.name)
    return (op_counts(load_program(pdmodel)).get("batch_norm", 0)
            - op_counts(load_program(out_dir / "model.pdmodel")).get("batch_norm", 0))
