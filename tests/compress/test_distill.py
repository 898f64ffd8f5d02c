"""Issue 33: what QAT distils (the detector's decoded outputs, one fitting loss each), what it trains on
(augmented calibration images minus a held-back slice) and when it stops (agreement on that slice)."""
from pathlib import Path

import numpy as np
import pytest

from fastdet_cli.compress.distill import DistillNode, act_distillation, default_nodes, partners
from fastdet_cli.compress.qat_data import EarlyStop, TrainBatches, augment, split_holdout
from fastdet_cli.paths import PACKAGE_DIR

EMBEDDED = PACKAGE_DIR / "models" / "default" / "model.pdmodel"


def _nms_inputs(pdmodel: Path) -> dict[str, str]:
    from fastdet_cli.paddle_program import load_program

    op = next(op for op in load_program(pdmodel).blocks[0].ops if op.type == "multiclass_nms3")
    return {i.parameter: i.arguments[0] for i in op.inputs if i.arguments}


def test_embedded_model_distils_the_nms_inputs():
    """GFL with NMS in the program: the decoded boxes and the class scores (√(sigmoid · sigmoid)) NMS reads."""
    pytest.importorskip("paddle")
    nodes = {n.kind: n for n in default_nodes(EMBEDDED)}
    nms = _nms_inputs(EMBEDDED)
    assert set(nodes) == {"boxes", "scores"}
    assert nodes["boxes"].name == nms["BBoxes"] and nodes["scores"].name == nms["Scores"]
    assert nodes["boxes"].loss == "fastdet_relative_l1" and nodes["scores"].loss == "fastdet_sigmoid_kl"
    assert nodes["boxes"].shape[-1] == 4


RAW = [DistillNode("s8", "scores", (1, 7600, 10)), DistillNode("s16", "scores", (1, 1900, 10)),
       DistillNode("d8", "distribution", (1, 7600, 32)), DistillNode("d16", "distribution", (1, 1900, 32))]


def test_one_node_group_per_loss_and_each_distribution_has_its_score_map():
    act = act_distillation(RAW, alpha=2.0)
    assert act == {"node": [["s8", "s16"], ["d8", "d16"]], "loss": ["fastdet_sigmoid_kl", "fastdet_dfl_kl"],
                   "alpha": [2.0, 2.0]}
    assert partners(RAW) == {"d8": "s8", "d16": "s16"}


def test_act_config_takes_the_default_nodes_unless_the_yaml_names_its_own(tmp_path):
    from fastdet_cli.compress.config import load_compress_config
    from fastdet_cli.compress.qat import act_config

    def cfg(distill: str):
        p = tmp_path / "c.yaml"
        p.write_text("Global: {model_dir: m, qat_image_path: i}\nQuantAware: {}\n" + distill)
        return load_compress_config(p)

    assert act_config(cfg(""), ["image"], RAW)["Distillation"]["loss"] == ["fastdet_sigmoid_kl", "fastdet_dfl_kl"]
    own = act_config(cfg("Distillation: {node: [conv_out], loss: soft_label}\n"), ["image"], RAW)["Distillation"]
    assert own == {"node": ["conv_out"], "loss": "soft_label", "alpha": 1.0}
    loss_only = act_config(cfg("Distillation: {loss: l2}\n"), ["image"], RAW)["Distillation"]
    assert loss_only == {"node": ["s8", "s16", "d8", "d16"], "loss": "l2", "alpha": 1.0}


def _run_loss(fn, teacher: np.ndarray, student: np.ndarray, teacher_scores: np.ndarray | None = None) -> float:
    """`fn` of ACT's signature on a static program whose `teacher_x` / `x` hold the arrays (and `teacher_s`, the
    score map partnered with `x`, when given)."""
    import paddle

    from fastdet_cli.compress import distill

    feed = {"teacher_x": teacher, "x": student}
    if teacher_scores is not None:
        feed["teacher_s"] = teacher_scores
        distill._PARTNERS["x"] = "s"
    paddle.enable_static()
    try:
        prog = paddle.static.Program()
        with paddle.static.program_guard(prog, paddle.static.Program()):
            for name, arr in feed.items():
                paddle.static.data(name, list(arr.shape), "float32")
            loss = fn("teacher_x", "x", prog)
        return float(np.array(paddle.static.Executor(paddle.CPUPlace()).run(prog, feed=feed, fetch_list=[loss])[0]))
    finally:
        distill._PARTNERS.clear()
        paddle.disable_static()


def test_losses_are_zero_on_agreement_and_grow_with_disagreement():
    pytest.importorskip("paddle")
    from fastdet_cli.compress import distill

    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (1, 6, 3)).astype(np.float32)
    assert _run_loss(distill.fastdet_sigmoid_kl, p, p) == pytest.approx(0, abs=1e-5)
    near, far = (np.clip(p + d, 0.01, 0.99).astype(np.float32) for d in (0.05, 0.3))
    assert 0 < _run_loss(distill.fastdet_sigmoid_kl, p, near) < _run_loss(distill.fastdet_sigmoid_kl, p, far)
    logits = rng.normal(size=(1, 6, 32)).astype(np.float32)
    assert _run_loss(distill.fastdet_dfl_kl, logits, logits) == pytest.approx(0, abs=1e-5)
    assert _run_loss(distill.fastdet_dfl_kl, logits, logits + 5.0) == pytest.approx(0, abs=1e-5)  # softmax-invariant
    shuffled = logits[..., ::-1].copy()
    assert _run_loss(distill.fastdet_dfl_kl, logits, shuffled) > 0.1
    # weighted by the teacher's best score per anchor: disagreement on a zero-score anchor does not count
    scores = np.zeros((1, 6, 3), np.float32)
    scores[0, 0] = 0.9
    bad_elsewhere = logits.copy()
    bad_elsewhere[0, 1:] = shuffled[0, 1:]
    assert _run_loss(distill.fastdet_dfl_kl, logits, bad_elsewhere, scores) == pytest.approx(0, abs=1e-4)
    assert _run_loss(distill.fastdet_dfl_kl, logits, bad_elsewhere) > 0.1  # unweighted: it counts


def test_holdout_slice_is_a_fifth_fixed_and_disjoint():
    files = [Path(f"p{i:02d}.jpg") for i in range(19)]
    train, held = split_holdout(files)
    assert len(held) == 4 and len(train) == 15 and not set(train) & set(held)
    assert split_holdout(files) == (train, held)  # every rank draws the same
    assert split_holdout(files[:5]) == (files[:5], [])  # too few to hold any back
    assert len(split_holdout([Path(f"{i}.jpg") for i in range(500)])[1]) == 20


def test_qat_trains_without_the_held_back_slice_but_calibrates_on_every_image(tmp_path):
    """QAT of engine onnxruntime starts from the PTQ model `--method ptq` makes: its ranges come from all the
    calibration images; only the training leaves the held-back slice out."""
    pytest.importorskip("paddle")
    from fastdet_cli.compress import prepare

    config = tmp_path / "c.yaml"
    config.write_text("Global:\n  model_dir: default\n  format: paddle\n  engine: onnxruntime\n"
                      "  qat_image_path: default\n  image_limit: 12\nQuantAware: {}\n")
    job = prepare(config, "qat", tmp_path / "out", log=lambda m: None)
    assert len(job.samples) == 10 and len(job.holdout) == 2
    assert not set(job.samples.files) & set(job.holdout)
    ptq = prepare(config, "ptq", tmp_path / "ptq", log=lambda m: None)
    assert ptq.holdout == [] and ptq.calibration is ptq.samples
    assert job.calibration.files == ptq.samples.files  # the same images in the same order: the same PTQ model


def test_augment_flips_and_zooms_within_bounds():
    img = np.zeros((100, 60, 3), np.uint8)
    img[:, :30] = 255  # left half white
    rng = np.random.default_rng(1)
    shapes, flipped = set(), 0
    for _ in range(40):
        out = augment(img, rng)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        h, w = out.shape[:2]
        assert 0.8 * 100 - 1 <= h <= 1.25 * 100 and 0.8 * 60 - 1 <= w <= 1.25 * 60
        shapes.add((h, w))
        flipped += out[h // 2, -2].mean() > out[h // 2, 1].mean()  # white on the right: flipped
    assert len(shapes) > 10 and 8 < flipped < 32


class _Samples:
    feed_names = ["image"]

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": np.full((1,), i, np.float32)}

    def augmented(self, i, rng):
        return {"image": np.full((1,), i + 0.5, np.float32)}


def test_train_batches_reshuffle_each_epoch_and_stop_when_told():
    loader = TrainBatches(_Samples(8), 2, augmentation=False)
    first, second = ([b["image"].ravel().tolist() for b in loader()] for _ in range(2))
    assert sorted(sum(first, [])) == list(range(8)) and first != second
    aug = TrainBatches(_Samples(8), 2)
    batches = aug()
    assert next(batches)["image"].ravel()[0] % 1 == 0.5  # augmented
    aug.stop()
    assert list(batches) == [] and list(aug()) == []


def test_early_stop_after_patience_evaluations_without_a_better_agreement():
    class Losses:
        values = [[0, 1.0]]

    values = iter([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])
    stopped, said = [], []
    watch = EarlyStop(lambda *a: next(values), patience=3, stop=lambda: stopped.append(True), every=10,
                      losses=Losses(), log=said.append)
    for _ in range(5):
        watch(None, None, None, None)
    assert stopped == [True] and watch.best() == {"iteration": 20, "agreement": 0.7, "loss": 1.0}
    assert [h["iteration"] for h in watch.history] == [10, 20, 30, 40, 50]
    assert "agreement with FP32 on the held-back images 0.690 (best 0.700 at iteration 20)" in said[-2]


def test_activation_thresholds_grow_with_the_percentile(tmp_path):
    """qat_scales: each activation's calibrated threshold on the FP32 program, per percentile (the max largest)."""
    pytest.importorskip("paddle")
    import paddle

    from fastdet_cli.compress.qat_scales import activation_thresholds
    from fastdet_cli.compress.samples import FeedSamples, image_list
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paddle_program import conv_weights, load_program

    source = resolve_model("default")
    prog = load_program(EMBEDDED)
    convs = [op for op in prog.blocks[0].ops if op.type in ("conv2d", "depthwise_conv2d")]
    inputs = [next(i.arguments[0] for i in op.inputs if i.parameter == "Input") for op in convs[1:4]]
    assert len(conv_weights(prog)) > 50
    samples = FeedSamples(source, image_list("default", 2), ["image", "scale_factor"])
    paddle.enable_static()
    try:
        found = activation_thresholds(source.dir, samples, inputs + ["pact_copy_not_in_the_program"],
                                      (99.0, 99.99, 100.0))
    finally:
        paddle.disable_static()
    assert set(found[100.0]) == set(inputs)  # a name the FP32 program lacks is left to ACT's moving average
    for name in inputs:
        assert 0 < found[99.0][name] <= found[99.99][name] <= found[100.0][name], name
