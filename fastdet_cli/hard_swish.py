"""Hard-swish written as elementary ops, found by one matcher for every kind of graph that writes it: an ONNX graph
(onnx_graph.py) and a Paddle program (paddle_program.py). The matcher knows the pattern and its constants; a graph
takes part through `OpGraph`, which knows its own op names and where its constants live.

    h(x) = x · relu6(x + 3) / 6 = x · hard_sigmoid(x)   (hard_sigmoid with slope 1/6, offset 1/2)

The pieces form: add 3 (an add of the constant 3, or an affine op x + 3) → clip to 0..6 (clip or relu6) → mul by x
→ div by 6 (or mul by 1/6, or an affine op · 1/6). The gated form: x · hard_sigmoid(x). Every value between the
pieces must be read by the next piece only (not by another op, not as a graph output): else replacing them by one
op would take a value away from its other reader."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

THREE, SIX = 3.0, 6.0
GATE_SLOPE, GATE_OFFSET = 1 / 6, 0.5  # hard_sigmoid(x) = clip(slope · x + offset, 0, 1) as hard-swish's gate


class OpGraph(Protocol):
    """What the matcher reads of a graph. Values are names; ops are the graph's own objects."""

    def producer(self, value: str) -> Any | None:
        """The op writing `value` (None: a graph input or a stored constant)."""

    def readers(self, value: str) -> int:
        """How many ops (and graph outputs) read `value`."""

    def kind(self, op) -> str:
        """"add", "mul", "div" (two inputs), "clip" (clip and relu6), "affine" (factor · x + bias),
        "hard_sigmoid"; anything else is an op the pattern has no place for."""

    def inputs(self, op) -> list[str]:
        """The op's data inputs in order (a clip's bounds are `params`, not inputs)."""

    def output(self, op) -> str:
        """The value the op writes."""

    def constant(self, value: str) -> float | None:
        """The scalar constant `value` holds, or None when it is not a one-element constant."""

    def params(self, op) -> dict[str, float | None]:
        """clip: lo, hi; affine: factor, bias; hard_sigmoid: slope, offset (missing or None: not a constant)."""


@dataclass(frozen=True)
class HardSwish:
    """One hard-swish found: its input, the value it writes, and the graph's ops it spans (first to last)."""

    x: str
    out: str
    ops: tuple


def near(v: float | None, want: float) -> bool:
    """`v` is `want` up to float rounding."""
    return v is not None and abs(v - want) <= 1e-6 * max(1.0, abs(want))


def is_gate(slope: float | None, offset: float | None) -> bool:
    """A hard-sigmoid with these constants is hard-swish's gate, relu6(x + 3) / 6."""
    return near(slope, GATE_SLOPE) and near(offset, GATE_OFFSET)


def _orders(values: list[str]) -> list[tuple[str, str]]:
    """Both orders of a two-input op's inputs (none for another count)."""
    return [(values[0], values[1]), (values[1], values[0])] if len(values) == 2 else []


def _single_reader(g: OpGraph, value: str, *kinds: str):
    """The op of one of `kinds` writing `value`, when `value` is read once; else None."""
    op = g.producer(value)
    return op if op is not None and g.kind(op) in kinds and g.readers(value) == 1 else None


def _scaled_by_a_sixth(g: OpGraph, last) -> list[str]:
    """The values `last` divides by 6 (div by 6, mul by 1/6, affine · 1/6): where the product x · gate may be."""
    kind, ins = g.kind(last), g.inputs(last)
    if kind == "div" and len(ins) == 2 and near(g.constant(ins[1]), SIX):
        return [ins[0]]
    if kind == "mul":
        return [a for a, b in _orders(ins) if near(g.constant(b), 1 / SIX)]
    if kind == "affine" and ins:
        p = g.params(last)
        return [ins[0]] if near(p.get("factor"), 1 / SIX) and near(p.get("bias"), 0.0) else []
    return []


def _plus_three(g: OpGraph, add, x: str) -> bool:
    """`add` computes x + 3 (an add of the constant 3, or an affine op with factor 1 and bias 3)."""
    ins = g.inputs(add)
    if g.kind(add) == "affine":
        p = g.params(add)
        return ins[:1] == [x] and near(p.get("factor"), 1.0) and near(p.get("bias"), THREE)
    return any(a == x and near(g.constant(b), THREE) for a, b in _orders(ins))


def _gate_of(g: OpGraph, value: str, x: str):
    """The ops (add, clip) computing relu6(x + 3) into `value`, each read once; None when it is not that."""
    clip = _single_reader(g, value, "clip")
    if clip is None or not g.inputs(clip):
        return None
    p = g.params(clip)
    if not (near(p.get("lo"), 0.0) and near(p.get("hi"), SIX)):
        return None
    added = g.inputs(clip)[0]
    add = _single_reader(g, added, "add", "affine")
    return (add, clip) if add is not None and _plus_three(g, add, x) else None


def match_pieces(g: OpGraph, last) -> HardSwish | None:
    """The hard-swish x · relu6(x + 3) / 6 whose last piece is `last`, or None."""
    for product in _scaled_by_a_sixth(g, last):
        mul = _single_reader(g, product, "mul")
        if mul is None:
            continue
        for gate, x in _orders(g.inputs(mul)):
            pieces = _gate_of(g, gate, x)
            if pieces is not None:
                return HardSwish(x, g.output(last), (*pieces, mul, last))
    return None


def match_gated(g: OpGraph, mul) -> HardSwish | None:
    """The hard-swish x · hard_sigmoid(x) (the gate's slope 1/6, offset 1/2) whose product is `mul`, or None."""
    if g.kind(mul) != "mul":
        return None
    for gate_value, x in _orders(g.inputs(mul)):
        gate = _single_reader(g, gate_value, "hard_sigmoid")
        if gate is not None and g.inputs(gate)[:1] == [x] and is_gate(g.params(gate).get("slope"),
                                                                       g.params(gate).get("offset")):
            return HardSwish(x, g.output(mul), (gate, mul))
    return None


def find_all(g: OpGraph, ops: Iterable, match: Callable[[OpGraph, Any], HardSwish | None]) -> list[HardSwish]:
    """Every hard-swish `match` (match_pieces or match_gated) finds ending at one of `ops`, none sharing an op."""
    found, taken = [], set()
    for op in ops:
        m = match(g, op)
        spans = {g.output(o) for o in m.ops} if m is not None else set()
        if m is not None and not spans & taken:
            found.append(m)
            taken |= spans
    return found
