"""What QAT distils: the detector's decoded outputs, each with a loss that fits what it is.

ACT's default distillation nodes are the raw head maps and its default `soft_label` loss takes a softmax over the
last axis of an NCHW map, i.e. over the feature map's width: on the embedded model the loss stayed flat and QAT lost
to PTQ. fastdet reads the program instead and distils what the post-processing consumes:

- a program with a multiclass NMS op (PP-YOLOE, GFL, PicoDet exported with NMS): the NMS op's inputs, the decoded
  boxes (`boxes`: L1 relative to the teacher's mean magnitude) and the class scores (`scores`);
- a program without NMS (raw heads, NMS cut): its outputs. An output computed from a `sigmoid` through shape-only
  ops (or a product / square root of such) is a class score map (`scores`: the KL divergence between the
  teacher's and the student's per-class Bernoulli distributions, i.e. binary cross-entropy on soft targets minus
  the teacher's own entropy, 0 when they agree); an output whose last axis holds 4 · n bins (n ≥ 2) is a DFL box
  distribution (`distribution`: KL over the n bins of each box side, never over a spatial axis, weighted per
  anchor by the teacher's score there, as in GFL's localization distillation); anything else gets `l2`.

`Distillation.node` and `Distillation.loss` in the YAML still override (ACT's own loss names: l2, soft_label, …).
ACT evaluates loss names in its own module, so fastdet's losses are registered there for the duration of a run
(`registered_losses`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# ops that only move or rename values: a sigmoid seen through them is still the output's activation
_SHAPE_OPS = {"scale", "transpose2", "transpose", "reshape2", "reshape", "split", "concat", "flatten2",
              "flatten_contiguous_range", "squeeze2", "unsqueeze2", "slice", "assign"}
LOSSES = {"scores": "fastdet_sigmoid_kl", "distribution": "fastdet_dfl_kl", "boxes": "fastdet_relative_l1",
          "other": "l2"}


@dataclass(frozen=True)
class DistillNode:
    name: str  # the variable in the program
    kind: str  # scores | distribution | boxes | other
    shape: tuple[int, ...]

    @property
    def loss(self) -> str:
        return LOSSES[self.kind]

    def as_dict(self) -> dict:
        return {"node": self.name, "kind": self.kind, "shape": list(self.shape), "loss": self.loss}


def _ins(op) -> list[str]:
    return [a for i in op.inputs for a in i.arguments]


def _input(op, parameter: str) -> str | None:
    return next((i.arguments[0] for i in op.inputs if i.parameter == parameter and i.arguments), None)


def _is_probability(name: str, producers: dict, depth: int = 0) -> bool:
    """A sigmoid, seen through shape-only ops, products (GFL's √(sigmoid · sigmoid)) and square roots."""
    op = producers.get(name)
    if op is None or depth > 40:
        return False
    if op.type == "sigmoid":
        return True
    xs = [a for i in op.inputs if i.parameter in ("X", "Y") for a in i.arguments]
    if op.type in _SHAPE_OPS or op.type in ("sqrt", "elementwise_mul"):
        return bool(xs) and all(_is_probability(x, producers, depth + 1) for x in xs)
    return False


def _kind(name: str, dims: list[int], producers: dict) -> str:
    if _is_probability(name, producers):
        return "scores"
    last = dims[-1] if dims else 0
    if last > 0 and last % 4 == 0 and last // 4 >= 2:
        return "distribution"
    return "other"


def default_nodes(pdmodel: Path) -> list[DistillNode]:
    """The decoded outputs of the program in `pdmodel`, as described in the module's docstring."""
    from fastdet_cli.paddle_program import NMS_OPS, load_program, var_dims

    prog = load_program(pdmodel)
    ops = list(prog.blocks[0].ops)
    producers = {o: op for op in ops for out in op.outputs for o in out.arguments}
    nms = next((op for op in ops if op.type in NMS_OPS), None)
    if nms is not None:
        picked = [(_input(nms, "BBoxes"), "boxes"), (_input(nms, "Scores"), None)]
    else:
        picked = [(_ins(op)[0], None) for op in ops if op.type == "fetch"]
    nodes = []
    for name, kind in picked:
        dims = var_dims(prog, name) or []
        nodes.append(DistillNode(name, kind or _kind(name, dims, producers), tuple(dims)))
    return nodes


def act_distillation(nodes: list[DistillNode], alpha: float = 1.0) -> dict:
    """ACT's Distillation section for `nodes`: one node group per loss (ACT's list-of-lists form)."""
    groups: dict[str, list[str]] = {}
    for n in nodes:
        groups.setdefault(n.loss, []).append(n.name)
    return {"node": list(groups.values()), "loss": list(groups), "alpha": [float(alpha)] * len(groups)}


def _pair(teacher_var_name: str, student_var_name: str, program):
    import paddle

    block = (program or paddle.static.default_main_program()).global_block()
    teacher = block.var(teacher_var_name)
    teacher.stop_gradient = True
    return teacher, block.var(student_var_name)


def sigmoid_kl(t, s, classes: int | None = None):
    """Per-class Bernoulli KL(teacher ‖ student) of sigmoid score tensors: summed over the classes (`classes` of
    them, default the last axis), averaged over the anchors."""
    import paddle

    eps = 1e-6
    t = paddle.clip(t, eps, 1 - eps)
    s = paddle.clip(s, eps, 1 - eps)
    kl = t * (paddle.log(t) - paddle.log(s)) + (1 - t) * (paddle.log(1 - t) - paddle.log(1 - s))
    return paddle.mean(kl) * float(classes or t.shape[-1])


def dfl_kl(t, s, scores=None):
    """KL(teacher ‖ student) between the softmax distributions of each box side's n bins (last axis = 4 · n),
    summed over the 4 sides; averaged over the anchors, weighted by `scores`' best class per anchor (the teacher's
    score map of the same anchors) when given, so background anchors' boxes count little."""
    import paddle
    import paddle.nn.functional as F

    bins = int(t.shape[-1]) // 4
    t = F.softmax(paddle.reshape(t, [-1, bins]), axis=-1)
    log_s = F.log_softmax(paddle.reshape(s, [-1, bins]), axis=-1)
    kl = paddle.sum(paddle.reshape(paddle.sum(t * (paddle.log(paddle.clip(t, 1e-9, 1.0)) - log_s), axis=-1),
                                   [-1, 4]), axis=-1)  # one value per anchor
    if scores is None:
        return paddle.mean(kl)
    w = paddle.reshape(paddle.max(scores, axis=-1), [-1])
    w.stop_gradient = True
    return paddle.sum(w * kl) / (paddle.sum(w) + 1e-6)


def relative_l1(t, s):
    """Mean |student − teacher| over the teacher's mean magnitude (decoded boxes are in pixels)."""
    import paddle

    return paddle.mean(paddle.abs(s - t)) / (paddle.mean(paddle.abs(t)) + 1e-6)


def fastdet_sigmoid_kl(teacher_var_name, student_var_name, program=None):
    """ACT's form of `sigmoid_kl` (variables named in the distillation program)."""
    return sigmoid_kl(*_pair(teacher_var_name, student_var_name, program))


def fastdet_dfl_kl(teacher_var_name, student_var_name, program=None):
    """ACT's form of `dfl_kl`: the score partner found by name (`registered_losses`)."""
    import paddle

    t, s = _pair(teacher_var_name, student_var_name, program)
    partner = _PARTNERS.get(student_var_name)
    if partner is None:
        return dfl_kl(t, s)
    prefix = teacher_var_name[:len(teacher_var_name) - len(student_var_name)]
    block = (program or paddle.static.default_main_program()).global_block()
    return dfl_kl(t, s, block.var(prefix + partner))


def fastdet_relative_l1(teacher_var_name, student_var_name, program=None):
    """ACT's form of `relative_l1`."""
    return relative_l1(*_pair(teacher_var_name, student_var_name, program))


_FASTDET_LOSSES = {f.__name__: f for f in (fastdet_sigmoid_kl, fastdet_dfl_kl, fastdet_relative_l1)}
_PARTNERS: dict[str, str] = {}  # distribution output → the score map of the same anchors


def partners(nodes: list[DistillNode]) -> dict[str, str]:
    """Each box distribution's score map: the `scores` node whose shape but the last axis is the same."""
    scores = {n.shape[:-1]: n.name for n in nodes if n.kind == "scores"}
    return {n.name: scores[n.shape[:-1]] for n in nodes if n.kind == "distribution" and n.shape[:-1] in scores}


@contextmanager
def registered_losses(nodes: list[DistillNode] = ()):
    """fastdet's loss functions visible to ACT, which resolves `Distillation.loss` names in its own module; the
    distributions' score partners (from `nodes`) known to `fastdet_dfl_kl`."""
    from paddleslim.auto_compression import create_compressed_program as ccp

    added = [name for name in _FASTDET_LOSSES if not hasattr(ccp, name)]
    for name in added:
        setattr(ccp, name, _FASTDET_LOSSES[name])
    _PARTNERS.update(partners(list(nodes)))
    try:
        yield
    finally:
        _PARTNERS.clear()
        for name in added:
            delattr(ccp, name)
