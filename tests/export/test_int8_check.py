"""The INT8 export check (export/int8_check.py) fails on broken exports and passes on INT8 rounding noise of the
size measured between ONNX Runtime and Paddle Inference (AMX Xeon: score change up to 0.07, 0.01 at the median;
box IoU 0.98 at the median)."""
import numpy as np
import pytest

from fastdet_cli.det.model import resolve_model
from fastdet_cli.export.int8_check import (BOX_IOU_MEDIAN_MIN, CHAOTIC_SPREAD, SCORE_MEDIAN_MAX, SCORE_P90_MAX,
                                           SPREAD_FACTOR, check_int8_export, output_agreement, tolerances)

pytestmark = pytest.mark.paddle


@pytest.fixture(scope="module")
def int8_export(default_ptq, tmp_path_factory):
    """The embedded model's PTQ program exported unchecked, with 8-bit weights (the form the check sees)."""
    from fastdet_cli.export.onnx import export_onnx

    res = export_onnx(resolve_model(default_ptq), tmp_path_factory.mktemp("int8") / "m", int8=True, validate=False,
                      weight_bits=8)
    return res.onnx_path


def _edit(src, dst, change):
    import onnx

    model = onnx.load(str(src))
    change(model.graph)
    onnx.save(model, str(dst))
    return dst


def _rescale(graph, q_factor, dq_factor, weights, which=None):
    """Give the Q and DQ of quantization pairs new scales (weights: pairs on constants; else activations)."""
    from onnx import numpy_helper

    from fastdet_cli.onnx_graph import constant_values

    vals = constant_values(graph)
    qs = [n for n in graph.node if n.op_type == "QuantizeLinear" and (n.input[0] in vals) == weights]
    for k, q in enumerate(qs):
        if which is not None and k != which:
            continue
        scale = vals[q.input[1]]
        graph.initializer.extend([numpy_helper.from_array((scale * q_factor).astype(np.float32), f"t_q{k}"),
                                  numpy_helper.from_array((scale * dq_factor).astype(np.float32), f"t_dq{k}")])
        for n in graph.node:
            if n is not q and n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]:
                n.input[1] = f"t_dq{k}"
        q.input[1] = f"t_q{k}"


def _drop_pairs(graph):
    """Remove every QuantizeLinear → DequantizeLinear pair (what an exporter that loses them would write)."""
    q_in = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    dq = {n.output[0]: q_in[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in q_in}
    keep = [n for n in graph.node if n.op_type != "QuantizeLinear" and n.output[0] not in dq]
    for n in keep:
        n.input[:] = [dq.get(i, i) for i in n.input]
    del graph.node[:]
    graph.node.extend(keep)


def _permute_output(graph, name, axis, order):
    """Route graph output `name` through a Gather that permutes `axis` (classes swapped, x and y swapped)."""
    from onnx import helper, numpy_helper

    for n in graph.node:
        n.output[:] = [f"{name}_unpermuted" if o == name else o for o in n.output]
    graph.initializer.append(numpy_helper.from_array(np.array(order, np.int64), f"{name}_order"))
    graph.node.append(helper.make_node("Gather", [f"{name}_unpermuted", f"{name}_order"], [name], axis=axis))


def test_a_correct_export_passes(default_ptq, int8_export):
    check = check_int8_export(default_ptq, int8_export, resolve_model(default_ptq).deploy)
    assert check.problems == []
    f = check.figures
    assert f["quantized convolutions"] > 20 and f["anchors compared"] > 50
    assert f["score median"] < 0.03 and f["box IoU median"] > 0.95
    # the program's own rounding spread (every scale moved by ±0.1%): not zero (the perturbation rounds some values
    # the other way), and a trained detector's, not a chaotic network's (no note); bounds are the module's own
    s = check.spread
    assert 0 < s["score median"] <= CHAOTIC_SPREAD and s["box IoU median"] < 1.0 and not check.notes, s
    # ORT-vs-Paddle noise is of the spread's size: within SPREAD_FACTOR × the spread, the premise of the rule below
    assert f["score median"] <= SPREAD_FACTOR * s["score median"] and f["score p90"] <= SPREAD_FACTOR * s["score p90"]
    # the tolerances follow the documented rule on the spread measured here: the floors, or SPREAD_FACTOR × the
    # spread where that is wider (which it is depends on the CPU, so no number from one run is asserted)
    assert check.tolerances == pytest.approx({
        "score median": max(SCORE_MEDIAN_MAX, SPREAD_FACTOR * s["score median"]),
        "score p90": max(SCORE_P90_MAX, SPREAD_FACTOR * s["score p90"]),
        "box IoU median": min(BOX_IOU_MEDIAN_MIN, 1.0 - SPREAD_FACTOR * (1.0 - s["box IoU median"]))}), s


def test_tolerances_widen_only_for_a_program_that_is_itself_sensitive_to_rounding():
    assert tolerances({"score median": 0.01, "score p90": 0.03, "box IoU median": 0.97}) == tolerances()
    wide = tolerances({"score median": 0.4, "score p90": 0.8, "box IoU median": 0.8})  # a chaotic random network
    assert wide["score median"] == pytest.approx(1.2) and wide["box IoU median"] == pytest.approx(0.4)


BROKEN = {
    "one weight DQ scale 2x (wrong scale)": (lambda g: _rescale(g, 1, 2, True, 10), "disagree"),
    "weights DQ at 1/127 of Q": (lambda g: _rescale(g, 1, 1 / 127, True), "disagree"),
    "activation scales all 2x": (lambda g: _rescale(g, 2, 2, False), "input: scale is 2×"),
    "Q/DQ pairs dropped": (_drop_pairs, "Q/DQ pair missing"),
    "weight scales all 2x (Q and DQ)": (lambda g: _rescale(g, 2, 2, True), "weights: scale is 2×"),
    "two classes' scores swapped": (lambda g: _permute_output(g, "scores", 1, [1, 0, 2, 3, 4][:5]), "class scores"),
    "box x and y swapped": (lambda g: _permute_output(g, "boxes", 2, [1, 0, 3, 2]), "boxes overlap"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_exports_fail(default_ptq, int8_export, tmp_path, name):
    change, expected = BROKEN[name]
    broken = _edit(int8_export, tmp_path / "broken.onnx", change)
    check = check_int8_export(default_ptq, broken, resolve_model(default_ptq).deploy)
    assert check.problems and any(expected in p for p in check.problems), check.problems


def _scene(rng, anchors=800, classes=5):
    boxes = np.sort(rng.uniform(0, 192, (1, anchors, 4)), axis=-1)[..., [0, 2, 1, 3]][..., [0, 2, 1, 3]]
    boxes[..., 2:] = boxes[..., :2] + rng.uniform(10, 60, (1, anchors, 2))
    scores = rng.beta(0.3, 3.0, (1, classes, anchors))  # mostly background, a few hundred anchors above 0.1
    return [boxes.astype(np.float32), scores.astype(np.float32)]


def test_rounding_noise_of_the_measured_size_passes():
    """Scores moved by up to ±0.07 (Laplace noise: 0.01 median over an anchor's classes) and boxes by ~1 px,
    as between ORT and Paddle on
    the same program: the check passes. The old check failed such an export (a greedy NMS match)."""
    rng = np.random.default_rng(0)
    refs = [_scene(rng) for _ in range(3)]
    outs = []
    for b, s in refs:
        noise = np.clip(rng.laplace(0, 0.0055, s.shape), -0.07, 0.07)
        noise[0, 0, np.argsort(-s[0, 0])[:3]] = [0.07, -0.07, 0.07]  # the largest changes measured, on top anchors
        outs.append([b + rng.normal(0, 0.8, b.shape).astype(np.float32), np.clip(s + noise, 0, 1).astype(np.float32)])
    check = output_agreement(refs, outs)
    assert check.problems == [], check.problems
    assert 0.005 < check.figures["score median"] < 0.02 and check.figures["score max"] >= 0.069


def test_output_order_does_not_matter_but_shapes_do():
    rng = np.random.default_rng(1)
    refs = [_scene(rng)]
    assert output_agreement(refs, [refs[0][::-1]]).problems == []
    wrong = [[refs[0][0][:, :400], refs[0][1][:, :, :400]]]
    assert output_agreement(refs, wrong).problems


def test_an_untrained_model_still_gets_its_best_anchors_compared():
    """No anchor reaches 0.1 (random weights: every score near the 0.01 prior): the 100 best-scored anchors are
    compared, so boxes moved by a broken export still fail."""
    rng = np.random.default_rng(2)
    boxes, _ = _scene(rng)
    scores = rng.uniform(0.005, 0.015, (1, 5, boxes.shape[1])).astype(np.float32)
    check = output_agreement([[boxes, scores]], [[boxes + 0.5, scores]])
    assert check.problems == [] and check.figures["anchors compared"] == 100
    shifted = boxes.copy()
    shifted[..., [0, 2]] += 60.0  # every box moved by its own width or more
    assert any("boxes overlap" in p for p in output_agreement([[boxes, scores]], [[shifted, scores]]).problems)
