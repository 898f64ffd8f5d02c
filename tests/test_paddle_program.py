"""Rewriting a Paddle program: the integer-weight 1×1 convolution (PP-YOLOE's DFL projection) becomes the same
weighted sum in ops Paddle 2.6.2's oneDNN INT8 pass does not mistake for a quantized convolution; a hard-swish
written in elementary ops becomes one hard_swish op (hard_swish.py's matcher), its look-alikes are left alone."""
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.paddle


def _program_with_projection(out_dir: Path) -> None:
    import paddle

    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("image", [1, 17, 5, 4], "float32")
            proj = paddle.ParamAttr(name="proj.w_0", initializer=paddle.nn.initializer.Assign(
                np.arange(17, dtype="float32").reshape(1, 17, 1, 1)))
            y = paddle.static.nn.conv2d(paddle.nn.functional.softmax(x, axis=1), 1, 1, param_attr=proj,
                                        bias_attr=False)
            other = paddle.static.nn.conv2d(x, 1, 1, bias_attr=False)  # random float weights: left alone
            out = y + other
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(str(out_dir / "model"), [x], [out], exe, program=main)
    finally:
        paddle.disable_static()


def test_integer_weight_conv_becomes_the_same_weighted_sum(tmp_path):
    from fastdet_cli.paddle_program import load_program, op_counts, rewrite_integer_weight_convs
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    src, dst = tmp_path / "src", tmp_path / "dst"
    _program_with_projection(src)
    shutil.copytree(src, dst)
    assert rewrite_integer_weight_convs(dst) == ["proj.w_0"]
    before, after = op_counts(load_program(src / "model.pdmodel")), op_counts(load_program(dst / "model.pdmodel"))
    assert after["conv2d"] == before["conv2d"] - 1 and after["reduce_sum"] == 1 and after["elementwise_mul"] == 1
    feed = {"image": np.random.default_rng(0).normal(0, 2, (1, 17, 5, 4)).astype(np.float32)}
    outs = []
    for d in (src, dst):
        with create_runner("paddle", d, RunnerOptions(threads=1)) as r:
            outs.append(r.infer(feed)[0])
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    assert rewrite_integer_weight_convs(dst) == []  # nothing left to rewrite


def test_skip_quant_marks_load_under_onednn_int8_all(default_ptq, tmp_path):
    """QAT marks its float convolutions with skip_quant; Paddle Inference's oneDNN INT8 passes read that attribute
    as an int and refused the whole program when it was a bool (the op-set probe then never tried 'all')."""
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paddle_program import load_program, mark_skip_quant
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    model = tmp_path / "marked"
    shutil.copytree(default_ptq, model)
    (model / "compress_report.json").unlink(missing_ok=True)
    prog = load_program(model / "model.pdmodel")  # PaddleSlim's own marks removed: fastdet's are new attributes
    for op in prog.blocks[0].ops:
        for i in reversed([i for i, a in enumerate(op.attrs) if a.name == "skip_quant"]):
            del op.attrs[i]
    (model / "model.pdmodel").write_bytes(prog.SerializeToString())
    # two of the convolutions the PTQ program keeps float (quantized ones read a dequantized weight)
    assert mark_skip_quant(model / "model.pdmodel", model / "model.pdmodel", ["conv2d_1.w_0", "conv2d_86.w_0"]) == 2
    marks = [a for op in load_program(model / "model.pdmodel").blocks[0].ops for a in op.attrs
             if a.name == "skip_quant"]
    assert marks and all(a.type == 0 and a.i == 1 for a in marks)  # INT, as Paddle's PTQ writes it
    feed = sample_inputs(resolve_model(str(model)).deploy, 0)
    with create_runner("paddle", model, RunnerOptions(threads=1, precision="int8", mkldnn_int8_ops="all")) as r:
        boxes = r.infer({k: feed[k] for k in r.input_metadata()})[0]
    assert boxes.ndim == 2 and boxes.shape[1] == 6


def _program_with_hard_swish(out_dir: Path, form: str) -> None:
    """image → conv → a hard-swish written in elementary ops → out. `form`: "ops" (elementwise_add of a
    fill_constant → clip → elementwise_mul → elementwise_div, how x2paddle converts paddle2onnx's pieces),
    "python" (x * relu6(x + 3) / 6 in Python: scale → relu6 → elementwise_mul → scale), or a near miss: "plus2"
    (x + 2), "clip5" (clip to 0..5), "clip_read" (the clip's output read by another op too)."""
    import paddle
    import paddle.nn.functional as F

    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            image = paddle.static.data("image", [1, 3, 8, 8], "float32")
            x = paddle.static.nn.conv2d(image, 4, 3, padding=1)
            if form == "python":
                out = x * F.relu6(x + 3) / 6
            else:
                gate = paddle.clip(paddle.add(x, paddle.full([1], 2.0 if form == "plus2" else 3.0)), 0.0,
                                   5.0 if form == "clip5" else 6.0)
                out = paddle.divide(paddle.multiply(x, gate), paddle.full([1], 6.0))
                out = out + gate if form == "clip_read" else out
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(str(out_dir / "model"), [image], [out], exe, program=main)
    finally:
        paddle.disable_static()


@pytest.mark.parametrize("form", ["ops", "python"])
def test_hard_swish_pieces_become_one_op(tmp_path, form):
    from fastdet_cli.paddle_program import fuse_hardswish_ops, load_program, op_counts
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    src, dst = tmp_path / "src", tmp_path / "dst"
    _program_with_hard_swish(src, form)
    shutil.copytree(src, dst)
    assert fuse_hardswish_ops(dst) == 1
    ops = op_counts(load_program(dst / "model.pdmodel"))
    assert ops["hard_swish"] == 1 and not {"clip", "relu6", "elementwise_mul", "elementwise_div"} & set(ops)
    feed = {"image": np.random.default_rng(0).normal(0, 3, (1, 3, 8, 8)).astype(np.float32)}
    outs = []
    for d in (src, dst):
        with create_runner("paddle", d, RunnerOptions(threads=1, mkldnn=False)) as r:
            outs.append(r.infer(feed)[0])
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    assert fuse_hardswish_ops(dst) == 0


@pytest.mark.parametrize("form", ["plus2", "clip5", "clip_read"])
def test_hard_swish_look_alikes_are_left_alone(tmp_path, form):
    from fastdet_cli.paddle_program import fuse_hardswish_ops

    _program_with_hard_swish(tmp_path, form)
    before = (tmp_path / "model.pdmodel").read_bytes()
    assert fuse_hardswish_ops(tmp_path) == 0
    assert (tmp_path / "model.pdmodel").read_bytes() == before
