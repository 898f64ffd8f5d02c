"""Quantization-aware training with distillation: PaddleSlim's AutoCompression (ACT). Unlike FastDeploy, an
eval callback is passed when an eval dataset is given, so `TrainConfig.target_metric` is really checked."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

import numpy as np

from fastdet_cli.compress.common import FeedSamples
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
                         save_dir=str(out_dir), config=config, train_dataloader=loader,
                         eval_callback=eval_callback, deploy_hardware="gpu" if devices == "gpu" else None)
    ac.compress()
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
