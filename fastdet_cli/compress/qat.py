"""Quantization-aware training with distillation: PaddleSlim's AutoCompression (ACT). Unlike FastDeploy, an
eval callback is passed when an eval dataset is given, so `TrainConfig.target_metric` is really checked."""
from __future__ import annotations

import copy
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable

import numpy as np

from fastdet_cli.compress.samples import FeedSamples
from fastdet_cli.compress.config import CompressConfig
from fastdet_cli.det.model import ModelSource

# FastDeploy's Global keys that are its own business, not ACT's (ACT rejects or misreads them)
_FD_ONLY_GLOBAL = {"model_dir", "format", "model_filename", "params_filename", "qat_image_path", "ptq_image_path",
                   "image_path", "qat_preprocess", "ptq_preprocess", "preprocess", "arch", "qat_batch_size",
                   "eval_dataset", "image_limit", "deploy_backend"}


def act_config(cfg: CompressConfig, feed_names: list[str]) -> dict:
    """The config dict handed to AutoCompression."""
    g = {k: v for k, v in cfg.raw.get("Global", {}).items() if k not in _FD_ONLY_GLOBAL}
    g["input_list"] = feed_names
    quant = {k: v for k, v in cfg.quant.items() if k != "skip_tensor_list"}  # fastdet's: applied to the program
    quant.setdefault("onnx_format", True)
    quant.setdefault("quantize_op_types", ["conv2d", "depthwise_conv2d"])
    train = dict(cfg.train)
    train.setdefault("train_iter", 100)
    train.setdefault("eval_iter", train["train_iter"])
    train.setdefault("logging_iter", 10)  # ACT's default, explicit: how often the distillation loss is recorded
    train.setdefault("learning_rate", {"type": "CosineAnnealingDecay", "learning_rate": 0.00003,
                                       "T_max": train["train_iter"]})
    train.setdefault("optimizer_builder", {"optimizer": {"type": "SGD"}, "weight_decay": 4.0e-05})
    distill = dict(cfg.distill)
    distill.setdefault("alpha", 1.0)
    distill.setdefault("loss", "soft_label")
    return {"Global": g, "Distillation": distill, "QuantAware": quant, "TrainConfig": train}


def batches(samples: FeedSamples, batch_size: int, seed: int = 0, before_step: Callable | None = None) -> Callable:
    """A generator function over shuffled batches of feed dicts (ACT accepts one as its train loader; it asks for
    the next batch after the previous step has run, so `before_step` runs between steps)."""

    def gen():
        order = np.random.default_rng(seed).permutation(len(samples))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            items = [samples[int(j)] for j in order[i:i + batch_size]]
            if before_step is not None:
                before_step()
            yield {k: np.stack([it[k] for it in items]) for k in samples.feed_names}

    return gen


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
    (fastdet's default optimizer; weight decay included) that is exactly a step on the mean gradient. At each
    evaluation every persistable variable of the program (quantization scales too) is averaged, the ranks' weights
    are compared by digest, and rank 0's metric is broadcast so every rank takes the same decision (best model,
    early stop). Momentum-type optimizers' accumulators are not averaged between evaluations: inexact for them."""

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
        return {"parameter_averaging": "after every step (SGD: exact data parallelism)", "steps": self.steps,
                "averaged_steps": self.averaged, "evaluations": self.evaluations,
                "weights_identical_across_ranks": self.identical}


def run_qat(cfg: CompressConfig, source: ModelSource, samples: FeedSamples, out_dir: Path,
            eval_callback: Callable | None, devices: str) -> dict:
    import paddle

    from fastdet_cli import distributed
    from fastdet_cli.paddle_program import load_program, paddle_model_files

    pdmodel, pdiparams = paddle_model_files(source.dir)
    config = act_config(cfg, samples.feed_names)
    batch_size = int(cfg.raw.get("Global", {}).get("qat_batch_size", 4))
    paddle.set_device("gpu" if devices == "gpu" else "cpu")
    sync = None
    if distributed.world().size > 1 and not (devices == "gpu" and paddle.device.cuda.device_count() > 1):
        distributed.init()  # before ACT switches Paddle to static mode
        params = [v.name for b in load_program(pdmodel).blocks for v in b.vars
                  if v.persistable and v.name not in ("feed", "fetch")]
        sync = RankSync(params, eval_callback)
        eval_callback = sync.evaluate
    from paddleslim.auto_compression import AutoCompression

    loader = batches(samples, batch_size, before_step=sync.before_step if sync else None)
    ac = AutoCompression(model_dir=str(source.dir), model_filename=pdmodel.name, params_filename=pdiparams.name,
                         save_dir=str(out_dir), config=copy.deepcopy(config),  # ACT pops TrainConfig from it
                         train_dataloader=loader,
                         eval_callback=eval_callback, deploy_hardware="gpu" if devices == "gpu" else None)
    with LossLog() as losses, quick_ir_links():
        ac.compress()
    config["loss_log"] = losses.values  # compress_report.json → config_resolved: did training do anything
    if sync is not None:
        config["distributed"] = sync.record()
    # ACT writes model.pdmodel / model.pdiparams (+ intermediate files) into save_dir: keep the model only
    for extra in out_dir.iterdir():
        if extra.is_file() and extra.name not in ("model.pdmodel", "model.pdiparams"):
            extra.unlink()
        elif extra.is_dir():
            import shutil

            shutil.rmtree(extra)
    config["Global"]["qat_batch_size"] = batch_size
    return config


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
