"""The one hard-swish matcher (fastdet_cli/hard_swish.py) over a graph written out by hand: every form of the
pattern is found with its input, output and ops; a wrong constant or a piece read elsewhere is refused. The ONNX
and Paddle rewrites that adapt their graphs to it are tested in test_onnx_graph.py and test_paddle_program.py."""
from dataclasses import dataclass, field

import pytest

from fastdet_cli.hard_swish import find_all, match_gated, match_pieces


@dataclass
class Op:
    kind: str
    inputs: list[str]
    out: str
    params: dict = field(default_factory=dict)


class Toy:
    """A graph as lists of ops; constants by name; `outputs`: values the graph's user reads."""

    def __init__(self, ops: list[Op], constants: dict[str, float], outputs: tuple[str, ...] = ("y",)):
        self.ops, self.constants, self.outputs = ops, constants, outputs

    def producer(self, value):
        return next((op for op in self.ops if op.out == value), None)

    def readers(self, value):
        return sum(op.inputs.count(value) for op in self.ops) + self.outputs.count(value)

    def kind(self, op):
        return op.kind

    def inputs(self, op):
        return op.inputs

    def output(self, op):
        return op.out

    def constant(self, value):
        return self.constants.get(value)

    def params(self, op):
        return op.params


CONSTS = {"three": 3.0, "six": 6.0, "sixth": 1 / 6, "two": 2.0, "five": 5.0}


def pieces(add=None, clip=None, mul=None, last=None) -> list[Op]:
    """x · clip(x + 3, 0, 6) / 6 as add → clip → mul → div, any piece replaced."""
    return [add or Op("add", ["x", "three"], "a"),
            clip or Op("clip", ["a"], "c", {"lo": 0.0, "hi": 6.0}),
            mul or Op("mul", ["x", "c"], "m"),
            last or Op("div", ["m", "six"], "y")]


@pytest.mark.parametrize("ops", [
    pieces(),
    pieces(add=Op("add", ["three", "x"], "a"), mul=Op("mul", ["c", "x"], "m")),  # either order
    pieces(add=Op("affine", ["x"], "a", {"factor": 1.0, "bias": 3.0})),  # Paddle's x + 3: a scale op
    pieces(last=Op("mul", ["sixth", "m"], "y")),
    pieces(last=Op("affine", ["m"], "y", {"factor": 1 / 6, "bias": 0.0})),
    pieces(clip=Op("clip", ["a"], "c", {"lo": 0.0, "hi": 6.0 + 1e-7})),  # float rounding of the constant
], ids=["div", "swapped", "affine-add", "mul-sixth", "affine-sixth", "rounded"])
def test_the_pieces_are_one_hard_swish(ops):
    g = Toy(ops, CONSTS)
    found = find_all(g, ops, match_pieces)
    assert len(found) == 1
    assert (found[0].x, found[0].out) == ("x", "y") and list(found[0].ops) == ops


@pytest.mark.parametrize("ops, outputs", [
    (pieces(add=Op("add", ["x", "two"], "a")), ("y",)),  # x + 2
    (pieces(clip=Op("clip", ["a"], "c", {"lo": 0.0, "hi": 5.0})), ("y",)),  # relu6 would be clip 0..6
    (pieces(clip=Op("clip", ["a"], "c", {"lo": None, "hi": 6.0})), ("y",)),  # a bound that is not a constant
    (pieces(last=Op("div", ["m", "five"], "y")), ("y",)),
    (pieces(last=Op("div", ["six", "m"], "y")), ("y",)),  # 6 / (x · gate)
    (pieces(last=Op("affine", ["m"], "y", {"factor": 1 / 6, "bias": 1.0})), ("y",)),
    (pieces(mul=Op("mul", ["z", "c"], "m")), ("y",)),  # z · relu6(x + 3) / 6
    (pieces(), ("y", "c")),  # the clip's output is read elsewhere too
    (pieces(), ("y", "a")),
    (pieces(), ("y", "m")),
], ids=["add-2", "clip-5", "clip-unknown", "div-5", "div-swapped", "affine-bias", "other-x", "clip-read",
        "add-read", "mul-read"])
def test_near_misses_are_refused(ops, outputs):
    assert find_all(Toy(ops, CONSTS, outputs), ops, match_pieces) == []


def test_the_gated_form():
    def gated(slope=1 / 6, offset=0.5, gate_input="x"):
        return [Op("hard_sigmoid", [gate_input], "h", {"slope": slope, "offset": offset}),
                Op("mul", ["h", "x"], "y")]

    ops = gated()
    found = find_all(Toy(ops, CONSTS), ops, match_gated)
    assert [(m.x, m.out, list(m.ops)) for m in found] == [("x", "y", ops)]
    assert find_all(Toy(ops, CONSTS), ops, match_pieces) == []  # one form at a time
    for ops, outputs in ((gated(slope=0.2), ("y",)), (gated(offset=0.6), ("y",)), (gated(gate_input="z"), ("y",)),
                         (gated(), ("y", "h"))):
        assert find_all(Toy(ops, CONSTS, outputs), ops, match_gated) == []


def test_two_hard_swishes_in_a_row():
    first = pieces()
    second = [Op("add", ["y", "three"], "a2"), Op("clip", ["a2"], "c2", {"lo": 0.0, "hi": 6.0}),
              Op("mul", ["y", "c2"], "m2"), Op("div", ["m2", "six"], "y2")]
    ops = first + second
    found = find_all(Toy(ops, CONSTS, ("y2",)), ops, match_pieces)
    assert [(m.x, m.out) for m in found] == [("x", "y"), ("y", "y2")]
