"""A short QAT run (issue 28 item 6): PaddleSlim ACT trains the embedded model for a few steps, the distillation loss
falls, and the INT8 program runs on Paddle Inference (oneDNN INT8 kernels) within a stated mAP of FP32.

The config is fastdet_cli/configs/default_qat.yaml with 30 steps of 4 images over 40 generated images: 3 epochs of
the same 10 batches in the same order (`qat.batches` reshuffles with one seed), so the first and the last epoch's
losses are paired batch by batch. The loss is logged at every step (`TrainConfig.logging_iter: 1`; fastdet reads
ACT's log into compress_report.json → config_resolved.loss_log), there is no eval dataset, and `eval_iter` lies
past the last step, so ACT never evaluates. The distillation loss is `l2` at lr 5e-6 (the reference PicoDet ACT
config's pair), not the shipped `soft_label` at 3e-5: `soft_label` takes a softmax over the feature maps' width,
nearly uniform, so its loss sits on the teacher's entropy (~43.2) and moves less than its batch-to-batch noise.
Measured over these 30 steps, epoch means 43.23 → 43.20 → 43.18 at lr 3e-5 and 43.33 → 43.66 → 43.30 at 3e-4: it
does not reliably fall, at the shipped rate or ten times it.

Loss (epoch means, 5 runs on this machine): 2.58 → 1.07, 2.54 → 1.12, 2.54 → 1.03, 2.60 → 1.10, 2.60 → 1.01: the
last epoch at 0.39–0.44 of the first; bound LOSS_RATIO = 0.7. Almost all of that fall is QAT's moving-average
activation scales settling during the first epoch — the same run at learning rate 0 fell 2.63 → 1.09 → 1.09 — so
the check shows that the quantized training program runs, its quantization state updates and the loss reaches the
report, not that 30 SGD steps improve the weights (at this length their effect is below the noise).

mAP (200 val images; FP32 0.5914 on Paddle Inference): INT8 on oneDNN 0.5916, 0.5909, 0.5861, 0.5890, 0.5921 over
the same 5 runs (drops −0.07 to 0.53 point; ACT's training is not bit-reproducible: the losses agree for 3 steps,
then drift). Bound MAX_DROP = 1.5 points, a point above the worst run, which these fail: the same output with its
quantization scales moved by up to ±10% (paddle_quant.perturb_quant_scales) 0.5351 (5.6 points); 30 steps at lr
3e-5 (weights pulled off by l2) 0.5706 in the float-emulated program (2.1 points); the program ACT builds under
`python -O` (it then inserts 80 quantize ops instead of 407) 0.4298; the shipped QAT without its skipped conv, 0.29
(docs/compress.md).

Wall time 124–134 s on 2 cores shared with other jobs (~75 s of it ACT building the quantized training program,
whatever the number of steps), hence marked slow. The two unit tests at the end (how the loss is read, the Paddle
patch that makes ACT's program building ~4× faster) are not."""
import json

import numpy as np
import pytest
import yaml

from fastdet_cli.paths import PACKAGE_DIR
from fastdet_cli.runtime.registry import BACKENDS

pytestmark = pytest.mark.paddle

STEPS, BATCHES = 30, 10  # 10 batches of 4 = 40 images, 3 epochs
LOSS_RATIO = 0.7  # the last epoch's mean loss ≤ this × the first's (same batches)
MAX_DROP = 0.015  # INT8 mAP ≥ FP32 − 1.5 points (200 val images, Paddle Inference oneDNN INT8)


def short_config(path):
    cfg = yaml.safe_load((PACKAGE_DIR / "configs" / "default_qat.yaml").read_text())
    g = cfg["Global"]
    g["image_limit"] = 4 * BATCHES
    g.pop("eval_dataset")
    assert g["qat_batch_size"] == 4
    cfg["Distillation"]["loss"] = "l2"
    train = cfg["TrainConfig"]
    train.update(train_iter=STEPS, eval_iter=10 * STEPS, logging_iter=1)
    train["learning_rate"].update(learning_rate=5e-6, T_max=STEPS)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def short_qat(tmp_path_factory, fastdet_cache):
    pytest.importorskip("paddleslim", reason="paddleslim not installed")
    from fastdet_cli.compress import compress

    tmp = tmp_path_factory.mktemp("qat_short")
    result = compress(short_config(tmp / "qat.yaml"), save_dir=tmp / "qat", log=lambda m: None)
    return result


@pytest.mark.slow
def test_distillation_loss_falls(short_qat):
    log = short_qat.report.config_resolved["loss_log"]
    assert [i for i, _ in log] == list(range(STEPS))  # every step logged, none evaluated or skipped
    loss = np.array([v for _, v in log])
    assert np.isfinite(loss).all() and (loss > 0).all()
    epochs = loss.reshape(-1, BATCHES)  # row = epoch, column = the same batch
    first, last = epochs[0].mean(), epochs[-1].mean()
    print(f"\nQAT short: loss by epoch {np.round(epochs.mean(axis=1), 3).tolist()}")
    assert last <= LOSS_RATIO * first, f"distillation loss {first:.3f} → {last:.3f}: {epochs.round(3).tolist()}"


@pytest.mark.slow
def test_report_records_the_loss(short_qat):
    report = json.loads((short_qat.output_dir / "compress_report.json").read_text())
    resolved = report["config_resolved"]
    assert resolved["loss_log"] == short_qat.report.config_resolved["loss_log"]
    assert resolved["TrainConfig"]["logging_iter"] == 1 and resolved["Distillation"]["loss"] == "l2"
    assert report["method_label"] == "QAT-distillation" and report["paddle_int8_ops"] in ("conv", "all")


@pytest.mark.slow
def test_int8_map_within_bound_of_fp32(short_qat, val_dataset):
    from fastdet_cli.artifacts import detector
    from fastdet_cli.evaluate.coco import coco_evaluate
    from fastdet_cli.runtime.base import RunnerOptions

    maps = {}
    # INT8: oneDNN's INT8 kernels (op set from compress_report.json → paddle_int8_ops), as deployed; Paddle's
    # default (fp32) options would run the program's quantize/dequantize ops in float instead
    for name, model, precision in (("fp32", "default", "fp32"), ("int8", short_qat.output_dir, "int8")):
        with detector(model, BACKENDS["paddle"], RunnerOptions(precision=precision)) as det:
            maps[name] = coco_evaluate(det, val_dataset).map  # all 200: 100 images swing ±0.5 point
    print(f"\nQAT short: mAP FP32 {maps['fp32']:.4f}, INT8 {maps['int8']:.4f}")
    assert maps["fp32"] - maps["int8"] <= MAX_DROP, maps


def test_loss_log_reads_act_log_lines():
    """ACT's line (compressor._start_train: the loss fetched as a 0-d array, then each loss class), through the
    logger ACT writes it to; other lines and other loggers are ignored, and the handler leaves with the block."""
    import logging

    from fastdet_cli.compress.qat import ACT_LOGGER, LossLog

    act = logging.getLogger(ACT_LOGGER)
    with LossLog() as losses:
        for it, v in ((0, np.float32(0.7688)), (1, np.array(9.8893, np.float32)), (2, np.array([4.5], np.float32))):
            act.warning(f"Total iter: {it}, epoch: 0, batch: {it}, loss: {v} l2: {v} ")  # ACT's str.format of the array
        act.warning("epoch: 0 metric of compressed model is: 0.5, best metric of compressed model is 0.5")
        logging.getLogger("elsewhere").warning("Total iter: 7, epoch: 0, batch: 7, loss: 1.0")
    act.warning("Total iter: 3, epoch: 0, batch: 3, loss: 1.0 ")
    assert losses.values == [[0, pytest.approx(0.7688)], [1, pytest.approx(9.8893)], [2, 4.5]]
    assert losses not in act.handlers


def test_quick_ir_links_edits_like_paddle_and_restores():
    pytest.importorskip("paddle")
    import paddle
    from paddle.base import core
    from paddle.base.framework import IrGraph

    from fastdet_cli.compress.qat import quick_ir_links

    paddle.enable_static()
    try:
        prog = paddle.static.Program()
        with paddle.static.program_guard(prog):
            x = paddle.static.data("x", [1, 4])
            paddle.nn.functional.relu(paddle.scale(x, 2.0))
    finally:
        paddle.disable_static()
    before = {n: IrGraph.__dict__[n] for n in ("link_to", "update_input_link", "update_output_link")}

    def relinked(graph):
        scale = next(n for n in graph.all_op_nodes() if n.name() == "scale")
        relu = next(n for n in graph.all_op_nodes() if n.name() == "relu")
        old = next(v for v in scale.outputs)
        new = graph.create_var_node(name="y2", var_type=core.VarDesc.VarType.LOD_TENSOR, shape=[1, 4],
                                    var_dtype=core.VarDesc.VarType.FP32)
        graph.update_output_link(old, new, scale)
        graph.update_input_link(old, new, relu)
        graph.link_to(new, relu)
        return (sorted(v.name() for v in scale.outputs), sorted(v.name() for v in relu.inputs),
                scale.op().output("Out"), relu.op().input("X"))

    expected = relinked(IrGraph(core.Graph(prog.desc), for_test=True))
    with quick_ir_links():
        assert IrGraph.link_to is not before["link_to"] or not paddle.__version__.startswith("2.6.")
        assert relinked(IrGraph(core.Graph(prog.desc), for_test=True)) == expected
    assert {n: IrGraph.__dict__[n] for n in before} == before
