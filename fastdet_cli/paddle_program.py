"""Reading a Paddle inference program (`model.pdmodel`, old ProgramDesc format) without running it, and rewriting a
loaded one (cut before NMS, integer-weight convolutions, hard-swish fused). A quantized program's scales:
paddle_quant.py."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fastdet_cli.errors import FastdetError
from fastdet_cli.hard_swish import find_all, match_pieces

_ATTR_FIELDS = {0: "i", 1: "f", 2: "s", 6: "b", 9: "l", 12: "float64"}
NMS_OPS = ("multiclass_nms3", "multiclass_nms2", "multiclass_nms")
NMS_KEYS = ("background_label", "score_threshold", "nms_top_k", "nms_threshold", "nms_eta", "keep_top_k", "normalized")
SIDECAR = "fastdet.yml"  # fastdet's notes beside a model: NMS parameters, source, validation, passes to avoid
QUANT_OPS = ("quantize_linear", "dequantize_linear", "fake_quantize_dequantize_abs_max",
             "fake_channel_wise_quantize_dequantize_abs_max", "fake_quantize_dequantize_moving_average_abs_max")


def check_not_paddle3(path: Path) -> None:
    """A Paddle 3 (PIR) model folder gets one clear error: Paddle 2.6 cannot read it."""
    if (path / "model.json").exists() and not any(path.glob("*.pdmodel")):
        raise FastdetError(f"{path} holds a Paddle 3 (PIR, model.json) model, which is not supported: "
                           "export it with Paddle 2.6 (old program format: model.pdmodel)")


def paddle_model_files(path: Path) -> tuple[Path, Path]:
    """(model.pdmodel, model.pdiparams) of a Paddle inference model dir (or of its .pdmodel file)."""
    if path.is_file() and path.suffix == ".pdmodel":
        model, params = path, path.with_suffix(".pdiparams")
    else:
        check_not_paddle3(path)
        models = sorted(path.glob("*.pdmodel")) if path.is_dir() else []
        if not models:
            raise FastdetError(f"no Paddle inference model (*.pdmodel) in {path}")
        model = path / "model.pdmodel" if (path / "model.pdmodel").exists() else models[0]
        params = model.with_suffix(".pdiparams")
    if not params.exists():
        raise FastdetError(f"Paddle model weights missing: {params}")
    return model, params


def load_program(pdmodel: Path):
    from fastdet_cli.lazy import import_paddle

    import_paddle()
    from paddle.base.proto import framework_pb2

    prog = framework_pb2.ProgramDesc()
    prog.ParseFromString(Path(pdmodel).read_bytes())
    return prog


def deleted_passes(model_dir: Path) -> list[str]:
    """The Paddle Inference passes a model's fastdet.yml says to switch off (`paddle_delete_passes`: written where
    a pass was measured to break the program, e.g. by the x2paddle conversion check)."""
    import yaml

    p = Path(model_dir) / SIDECAR if Path(model_dir).is_dir() else Path(model_dir).parent / SIDECAR
    if not p.is_file():
        return []
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise FastdetError(f"{p} is malformed: {str(e).splitlines()[0]}") from e
    passes = data.get("paddle_delete_passes") if isinstance(data, dict) else None
    return [str(x) for x in passes] if isinstance(passes, list) else []


def _attrs(op, keys) -> dict:
    out = {}
    for a in op.attrs:
        field = _ATTR_FIELDS.get(a.type)
        if field and a.name in keys:
            out[a.name] = getattr(a, field)
    return out


def op_counts(prog) -> dict[str, int]:
    return dict(Counter(op.type for block in prog.blocks for op in block.ops))


def nms_attributes(prog) -> dict | None:
    """The first multiclass NMS op's parameters, or None when the program has no NMS."""
    for block in prog.blocks:
        for op in block.ops:
            if op.type in NMS_OPS:
                return _attrs(op, NMS_KEYS)
    return None


def var_dims(prog, name: str) -> list[int] | None:
    """The declared dims of variable `name` (-1 for a dynamic dimension), or None."""
    for block in prog.blocks:
        for v in block.vars:
            if v.name == name and v.type.type == 7:  # LOD_TENSOR
                return list(v.type.lod_tensor.tensor.dims)
    return None


def feed_names(prog) -> list[str]:
    """Input names in feed order (the `col` attribute of the feed ops)."""
    feeds = []
    for op in prog.blocks[0].ops:
        if op.type == "feed":
            col = _attrs(op, ("col",)).get("col", len(feeds))
            feeds.append((col, op.outputs[0].arguments[0]))
    return [name for _, name in sorted(feeds)]


def conv_weights(prog) -> dict[str, list[int]]:
    """Filter name → its dims, for every convolution of the program (in program order)."""
    dims = {v.name: list(v.type.lod_tensor.tensor.dims) for b in prog.blocks for v in b.vars}
    out = {}
    for block in prog.blocks:
        for op in block.ops:
            if op.type in ("conv2d", "depthwise_conv2d"):
                for inp in op.inputs:
                    if inp.parameter == "Filter":
                        out[inp.arguments[0]] = dims.get(inp.arguments[0], [0])
    return out  # a weight shared by several convs is named once


def single_output_conv_weights(prog) -> list[str]:
    """Weights of convolutions with one output channel. paddle2onnx 1.3.1 aborts on these when quantized
    (it folds BatchNorm into the scale and takes the max, not the abs-max: a negative scale), so compression
    keeps them in float."""
    return [w for w, dims in conv_weights(prog).items() if dims[0] == 1]


def mark_skip_quant(pdmodel: Path, out: Path, weights: list[str]) -> int:
    """Write a copy of the program in which the convolutions reading `weights` carry `skip_quant=1`, the
    attribute PaddleSlim's quantization passes honour (QAT has no skip list of its own). Returns how many
    ops were marked.

    An INT attribute, as Paddle's own PTQ writes it: Paddle Inference's oneDNN INT8 passes read it as int and
    refuse to load a program where it is BOOLEAN ("paddle::get failed, cannot get value (GetAttr(name)) by type
    int, its type is bool"), which made the op-set probe drop 'all' for every QAT program with a skip list."""
    prog = load_program(pdmodel)
    wanted, marked = set(weights), 0
    for block in prog.blocks:
        for op in block.ops:
            if op.type in ("conv2d", "depthwise_conv2d") and any(
                    inp.parameter == "Filter" and inp.arguments[0] in wanted for inp in op.inputs):
                attr = next((a for a in op.attrs if a.name == "skip_quant"), None)
                attr = op.attrs.add() if attr is None else attr
                attr.Clear()
                attr.name, attr.type, attr.i = "skip_quant", 0, 1  # 0 = INT
                marked += 1
    Path(out).write_bytes(prog.SerializeToString())
    return marked


def _integer_valued(arr) -> bool:

    return arr.size > 0 and bool(np.all(arr == np.round(arr)))


@contextmanager
def static_program(model_dir: Path):
    """The program of a Paddle inference model loaded for reading and rewriting: yields (program, feed names,
    fetch vars, executor, scope, path prefix); static mode is on inside the block only."""
    import paddle

    pdmodel, pdiparams = paddle_model_files(model_dir)
    prefix = str(pdmodel.with_suffix(""))
    paddle.enable_static()
    try:
        exe = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            if pdmodel.stem == pdiparams.stem:  # the path-prefix form (the other one logs a deprecation)
                prog, feeds, fetches = paddle.static.load_inference_model(prefix, exe)
            else:
                prog, feeds, fetches = paddle.static.load_inference_model(
                    str(pdmodel.parent), exe, model_filename=pdmodel.name, params_filename=pdiparams.name)
            yield prog, feeds, fetches, exe, scope, prefix
    finally:
        paddle.disable_static()


def save_program(prefix: str, prog, feeds: list[str], fetches: list, exe) -> None:
    """Save a loaded, rewritten inference program at `prefix` (.pdmodel/.pdiparams). Saving adds feed/fetch ops
    and a `scale` op named save_infer_model/scale_i per output; a loaded program already has them from its first
    export, and a second set writes those outputs again (a cycle PaddleSlim's graph passes reject): the old
    feed/fetch ops and output scale ops (chains of them, after several saves) are dropped first, and what they
    read is fetched."""
    import paddle

    block = prog.global_block()
    targets = {v.name for v in fetches}
    source = {}
    for i in reversed(range(len(block.ops))):
        op = block.ops[i]
        if op.type in ("feed", "fetch"):
            block._remove_op(i)
        elif op.type == "scale" and op.output("Out")[0] in targets and op.attr("scale") == 1.0 \
                and op.attr("bias") == 0.0:
            source[op.output("Out")[0]] = op.input("X")[0]
            targets.add(op.input("X")[0])
            block._remove_op(i)

    def root(name: str) -> str:
        while name in source:
            name = source[name]
        return name

    prog._sync_with_cpp()
    paddle.static.save_inference_model(prefix, [block.var(n) for n in feeds],
                                       [block.var(root(v.name)) for v in fetches], exe, program=prog)


def rewrite_integer_weight_convs(model_dir: Path) -> list[str]:
    """Replace every float 1×1 convolution whose weights are all integers (PP-YOLOE's DFL projection conv:
    weights 0..reg_max) by the same sum written as elementwise_mul + reduce_sum, in place in `model_dir`.

    Paddle 2.6.2's oneDNN INT8 pass (quant_dequant_mkldnn_pass, IsInt8Weight) takes any convolution whose float
    weights are all integers for an already-quantized one, finds no scale for it and refuses the whole program
    ("Could not find threshold information"). The rewritten ops compute the same values (a 1×1 convolution
    with one output channel is a weighted sum over channels) and are not convolutions, so the rest of the
    program runs in oneDNN INT8. Returns the weight names of the rewritten convolutions."""
    with static_program(model_dir) as (prog, feeds, fetches, exe, scope, prefix):
        block = prog.global_block()
        dequantized = {op.output("Y")[0] for op in block.ops if op.type == "dequantize_linear"}
        done = []
        for idx in range(len(block.ops) - 1, -1, -1):
            op = block.ops[idx]
            if op.type not in ("conv2d", "depthwise_conv2d") or op.input("Filter")[0] in dequantized:
                continue  # not a convolution, or a quantized one
            weight = op.input("Filter")[0]
            var = scope.find_var(weight)
            if var is None:
                continue
            w = np.array(var.get_tensor())
            plain = (op.attr("groups") == 1 and list(op.attr("strides")) == [1, 1]
                     and list(op.attr("dilations")) == [1, 1] and not any(op.attr("paddings"))
                     and w.ndim == 4 and w.shape[0] == 1 and w.shape[2:] == (1, 1))
            if not plain or not _integer_valued(w):
                continue
            x, out = op.input("Input")[0], op.output("Output")[0]
            tmp = block.create_var(name=f"{out}.fastdet_weighted", dtype=block.var(x).dtype,
                                   shape=block.var(x).shape)
            block._remove_op(idx)
            block._insert_op(idx, type="elementwise_mul", inputs={"X": [x], "Y": [weight]},
                             outputs={"Out": [tmp]}, attrs={"axis": -1})
            block._insert_op(idx + 1, type="reduce_sum", inputs={"X": [tmp]}, outputs={"Out": [out]},
                             attrs={"dim": [1], "keep_dim": True, "reduce_all": False})
            done.append(weight)
        if done:
            save_program(prefix, prog, feeds, fetches, exe)
    return done


def save_without_nms(model_dir: Path, out_dir: Path) -> bool:
    """Write the program of `model_dir` cut before its multiclass NMS op into `out_dir` (model.pdmodel |
    pdiparams): its outputs become the NMS inputs (boxes [N, M, 4], scores [N, C, M]), what an ONNX export with
    the NMS removed computes. Returns False (and writes nothing) when the program has no NMS."""
    import paddle

    with static_program(model_dir) as (prog, feeds, _, exe, _scope, _):
        block = prog.global_block()
        nms = next((op for op in block.ops if op.type in NMS_OPS), None)
        if nms is None:
            return False
        outputs = [block.var(nms.input("BBoxes")[0]), block.var(nms.input("Scores")[0])]
        # the loaded program already holds save_infer_model/scale_N variables: new ones need another prefix
        with paddle.utils.unique_name.guard("fastdet_cut_"):
            paddle.static.save_inference_model(str(Path(out_dir) / "model"), [block.var(n) for n in feeds],
                                               outputs, exe, program=prog)
    return True


def check_paddle_model(pdmodel: Path, pdiparams: Path) -> None:
    """Refuse files Paddle would crash on (an IndexError from C++, or a segfault for random bytes) with one
    clear error: the program must parse and have ops, and the weights file must hold at least one byte per
    element of the program's persistable tensors."""
    data = Path(pdmodel).read_bytes()
    try:
        prog = load_program(pdmodel) if data else None
    except Exception as e:  # protobuf's DecodeError (and friends) for bytes that are not a program
        raise FastdetError(f"{pdmodel} is not a Paddle program ({type(e).__name__}): re-export the model") from None
    if prog is None or not prog.blocks or not any(b.ops for b in prog.blocks):
        raise FastdetError(f"{pdmodel} is empty or holds no ops: re-export the model")
    need = 0
    for v in prog.blocks[0].vars:
        t = v.type.lod_tensor.tensor
        if v.persistable and v.type.type == 7 and v.name not in ("feed", "fetch") and all(d > 0 for d in t.dims):
            n = 1
            for d in t.dims:
                n *= d
            need += n  # one byte per element at the least: quantized programs store int8 weights
    have = Path(pdiparams).stat().st_size
    if have < need:
        raise FastdetError(f"{pdiparams} holds {have} bytes but the program's {need} weights need at least as many: "
                           "the weights file is truncated or belongs to another model")


class _ProgramOps:
    """A loaded Paddle program's block as the hard-swish matcher reads it (hard_swish.OpGraph)."""

    KINDS = {"elementwise_add": "add", "elementwise_mul": "mul", "elementwise_div": "div", "clip": "clip",
             "relu6": "clip", "scale": "affine", "hard_sigmoid": "hard_sigmoid"}

    def __init__(self, block, scope, fetches):
        self.block, self.scope = block, scope
        self.made_by = {o: op for op in block.ops for o in op.output_arg_names}
        self.read = Counter(name for op in block.ops for name in op.input_arg_names)
        self.read.update(v.name for v in fetches)  # a fetched value is read by the program's user

    def producer(self, value: str):
        return self.made_by.get(value)

    def readers(self, value: str) -> int:
        return self.read[value]

    def kind(self, op) -> str:
        return self.KINDS.get(op.type, "")

    def inputs(self, op) -> list[str]:
        return [n for slot in ("X", "Y") if slot in op.input_names for n in op.input(slot)]

    def output(self, op) -> str:
        return op.output("Out")[0]

    def constant(self, value: str) -> float | None:
        """A fill_constant's value or a one-element parameter's."""
        op = self.made_by.get(value)
        if op is not None:
            return float(op.attr("str_value") or op.attr("value")) if op.type == "fill_constant" else None
        var = self.scope.find_var(value)
        arr = np.array(var.get_tensor()) if var is not None else np.zeros(0)
        return float(arr.reshape(-1)[0]) if arr.size == 1 else None

    def _bound(self, clip, slot: str, attr: str) -> float | None:
        tensors = clip.input(slot) if slot in clip.input_names else []
        return self.constant(tensors[0]) if tensors else float(clip.attr(attr))

    def params(self, op) -> dict[str, float | None]:
        if op.type == "clip":
            return {"lo": self._bound(op, "Min", "min"), "hi": self._bound(op, "Max", "max")}
        if op.type == "relu6":
            return {"lo": 0.0, "hi": float(op.attr("threshold")) if op.has_attr("threshold") else 6.0}
        if op.type == "hard_sigmoid":
            return {"slope": float(op.attr("slope")), "offset": float(op.attr("offset"))}
        if op.type == "scale" and not ("ScaleTensor" in op.input_names and op.input("ScaleTensor")):
            factor, bias = float(op.attr("scale")), float(op.attr("bias"))
            return {"factor": factor, "bias": bias if op.attr("bias_after_scale") else bias * factor}
        return {}


def fuse_hardswish_ops(model_dir: Path) -> int:
    """Replace every hard-swish written as elementary ops — x · clip(x + 3, 0, 6) / 6 (elementwise_add → clip →
    elementwise_mul → elementwise_div, with the constants as parameters or fill_constant outputs: how x2paddle
    converts paddle2onnx's opset-13 graphs; relu6 and scale ops as well) — by one `hard_swish` op, in place in
    `model_dir`. Returns how many. The pattern: hard_swish.match_pieces.

    PaddleSlim's quantization puts a quantize/dequantize pair on the output of every elementary op: four
    roundings per activation where PaddleDetection's own programs (one hard_swish op) have none."""
    with static_program(model_dir) as (prog, feeds, fetches, exe, scope, prefix):
        block = prog.global_block()
        found = find_all(_ProgramOps(block, scope, fetches), list(block.ops), match_pieces)
        for m in found:
            positions = sorted(block.ops.index(op) for op in m.ops)
            for pos in reversed(positions):
                block._remove_op(pos)
            block._insert_op(positions[0], type="hard_swish", inputs={"X": [m.x]}, outputs={"Out": [m.out]},
                             attrs={"threshold": 6.0, "scale": 6.0, "offset": 3.0})
        if found:
            save_program(prefix, prog, feeds, fetches, exe)
    return len(found)
