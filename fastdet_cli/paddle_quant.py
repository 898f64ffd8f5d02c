"""A quantized Paddle program's scales: what each convolution computes (`quantized_convs`, the reference the INT8
export check holds an ONNX graph to) and the scales perturbed (`perturb_quant_scales`, the rounding noise two
correct INT8 runtimes show)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdet_cli.paddle_program import static_program


def perturb_quant_scales(model_dir: Path, delta: float, seed: int = 0) -> int:
    """Multiply every activation/weight Scale of a quantized program in `model_dir` by (1 + u·delta), u uniform in
    [−1, 1] per value, in place (the parameters file only): values near a rounding boundary round the other way,
    which is what two correct INT8 runtimes do to each other. Returns how many scale tensors were changed."""
    import paddle

    with static_program(model_dir) as (prog, feeds, fetches, exe, scope, prefix):
        rng = np.random.default_rng(seed)
        done = set()
        for op in prog.global_block().ops:
            if op.type in ("quantize_linear", "dequantize_linear") and op.input("Scale")[0] not in done:
                name = op.input("Scale")[0]
                done.add(name)
                t = scope.find_var(name).get_tensor()
                v = np.array(t)
                t.set((v * (1 + delta * rng.uniform(-1, 1, v.shape))).astype(v.dtype), paddle.CPUPlace())
        block = prog.global_block()
        data = paddle.static.serialize_persistables([block.var(n) for n in feeds], fetches, exe, program=prog)
        Path(prefix + ".pdiparams").write_bytes(data)
    return len(done)


@dataclass
class QuantizedConv:
    """What a quantized program computes for one convolution: the int range of its weights (bits) and their
    scales (one per output channel; float units per integer step), and its input's scale (None: float input)."""

    weight_scale: np.ndarray
    input_scale: float | None
    bits: int


def quantized_convs(model_dir: Path) -> dict[str, QuantizedConv]:
    """Weight name → QuantizedConv, for every convolution of a PaddleSlim (onnx_format) quantized program whose
    weights are stored quantized. Paddle's Scale tensors hold the abs-max range; divided here by 2^(bits−1)−1 to
    be the step ONNX's QuantizeLinear takes."""

    with static_program(model_dir) as (prog, _, _, _, scope, _):
        block = prog.global_block()
        made_by = {o: op for op in block.ops for o in op.output_arg_names}

        def scale_of(op):
            step = np.array(scope.find_var(op.input("Scale")[0]).get_tensor(), np.float64).reshape(-1)
            return step / (2 ** (op.attr("bit_length") - 1) - 1), op.attr("bit_length")

        out = {}
        for op in block.ops:
            if op.type not in ("conv2d", "depthwise_conv2d"):
                continue
            w_dq = made_by.get(op.input("Filter")[0])
            if w_dq is None or w_dq.type != "dequantize_linear":
                continue
            w_scale, bits = scale_of(w_dq)
            x_dq = made_by.get(op.input("Input")[0])
            x_q = made_by.get(x_dq.input("X")[0]) if x_dq is not None and x_dq.type == "dequantize_linear" else None
            x_scale = float(scale_of(x_q)[0][0]) if x_q is not None and x_q.type == "quantize_linear" else None
            out[w_dq.input("X")[0]] = QuantizedConv(w_scale, x_scale, bits)
    return out
