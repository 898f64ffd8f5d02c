"""Learned rounding, convolution by convolution (AdaRound): each INT8 convolution's weights rounded up or down — not
to the nearest grid point — so that its output on the quantized model's own input is closest to the FP32 model's
output, on the user's calibration images.

Why: rounding every weight to its nearest grid point is best for the weight, not for the output; the errors of a
channel's weights add up in its output. AdaRound (Nagel et al., 2020) makes the choice per weight a soft variable
h ∈ [0, 1] (weight = scale · (floor(w / scale) + h)), fits the convolution's output to the FP32 one by Adam while a
regularizer drives every h to 0 or 1, and then rounds h. Done in graph order, each convolution fitted on the input
the INT8 model gives it with every convolution before it already fitted (its target is the FP32 model's output
there, so a convolution also makes up for part of the error it receives). A convolution's output channels are
independent problems: each channel keeps the learned roundings or its nearest ones, whichever fits its sampled
outputs better, and its bias then takes the mean of what is left (so a convolution never fits worse than its PTQ
rounding on the images it is fitted on).

The fit runs on a few thousand sampled output positions per convolution (their input patches gathered from the
quantized model's input to it), in numpy: each step is two matrix products per group. The integer range is the one
the quantizer used (7-bit weights stay 7-bit). One ONNX Runtime session per depth step gives the quantized inputs of
that step's convolutions (compress/bias_correction.py's steps and truncation).
"""
from __future__ import annotations

import numpy as np

DEFAULT_IMAGES = 32  # images the fits sample their rows from (at most; spread over the training images)
DEFAULT_ROWS = 2048  # sampled output positions per convolution (over all images)
DEFAULT_ITERATIONS = 600  # Adam steps per convolution
LR = 1e-2  # Adam, on the rounding variables
REG = 0.01  # weight of the regularizer that drives h to 0 or 1 (AdaRound's λ, per weight)
WARMUP = 0.2  # share of the steps before the regularizer starts
BETA = (20.0, 2.0)  # the regularizer's exponent, annealed from the first to the second after the warm-up
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch: h reaches 0 and 1 at finite V


def learn_roundings(model, fp32_graph, feeds: list[dict], progress=None, rows: int = DEFAULT_ROWS,
                    iterations: int = DEFAULT_ITERATIONS, seed: int = 0) -> dict:
    """Fit the roundings of `model`'s (an INT8 ONNX graph, changed in place) quantized convolutions against
    `fp32_graph` (the FP32 graph it was quantized from: same convolution names and outputs, its weights the ones
    rounded) on `feeds` (batch-1 feed dicts). Returns the record for the report."""
    from fastdet_cli.compress.bias_correction import _depths, _truncated
    from fastdet_cli.compress.sensitivity import session
    from fastdet_cli.onnx_graph import conv_weights

    layers = [c for c in _Layer.all(model, conv_weights(fp32_graph)) if c is not None]
    rng = np.random.default_rng(seed)
    targets = _targets(fp32_graph, layers, feeds, rows, rng)
    by_output = {c.conv.output[0]: c for c in layers}
    steps = _depths(model.graph, [c.conv for c in layers])
    changed, fits = 0, []
    for done, step in enumerate(steps, 1):
        with session(_truncated(model, sorted({c.input[0] for c in step}))) as int8:
            outs = [_run(int8.session, f) for f in feeds]
        for conv in step:
            layer = by_output[conv.output[0]]
            where, y = targets[conv.output[0]]
            x = np.concatenate([layer.patches(o[conv.input[0]], pos) for o, pos in zip(outs, where)])
            fit = layer.fit(x, y, iterations)
            changed += fit["changed"]
            fits.append(fit)
        if progress:
            progress(done, len(steps))
    before = float(np.mean([f["error_nearest"] for f in fits])) if fits else 0.0
    after = float(np.mean([f["error"] for f in fits])) if fits else 0.0
    return {"convolutions": len(layers), "steps": len(steps), "images": len(feeds), "rows": rows,
            "iterations": iterations, "weights_changed": int(changed),
            "channels_learned": int(sum(f["channels_learned"] for f in fits)),
            "channels": int(sum(f["channels"] for f in fits)),
            "relative_error_nearest": float(f"{before:.4g}"), "relative_error": float(f"{after:.4g}")}


def _targets(fp32_graph, layers: list, feeds: list[dict], rows: int, rng) -> dict:
    """{conv output: ([positions per image], FP32 outputs there [rows, channels])}: `rows` output positions per
    convolution drawn at random over the images (their outputs kept, not the maps)."""
    from fastdet_cli.compress.bias_correction import _with_outputs
    from fastdet_cli.compress.sensitivity import session

    names = [c.conv.output[0] for c in layers]
    per_image = [rows // len(feeds) + (i < rows % len(feeds)) for i in range(len(feeds))]
    where: dict[str, list] = {n: [] for n in names}
    values: dict[str, list] = {n: [] for n in names}
    with session(_with_outputs(fp32_graph, names)) as fp32:
        for feed, n_rows in zip(feeds, per_image):
            outs = _run(fp32.session, feed)
            for name in names:
                y = outs[name][0]  # [C, H, W]
                flat = rng.choice(y.shape[1] * y.shape[2], size=min(n_rows, y.shape[1] * y.shape[2]), replace=False)
                pos = np.stack(np.unravel_index(flat, y.shape[1:]), 1)
                where[name].append(pos)
                values[name].append(y[:, pos[:, 0], pos[:, 1]].T)
    return {n: (where[n], np.concatenate(values[n]).astype(np.float32)) for n in names}


class _Layer:
    """One quantized convolution: its int8 weight (initializer behind a DequantizeLinear, per output channel), its
    FP32 weight, its bias (float, or int32 behind a DequantizeLinear) and its geometry."""

    def __init__(self, conv, weight_q, w_scale, w_zero, latent, bias, bias_scale, attrs):
        self.conv, self.weight_q, self.bias = conv, weight_q, bias
        self.bias_scale = bias_scale
        cout = latent.shape[0]
        self.scale = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (cout,)).reshape(-1, 1)
        self.zero = np.broadcast_to(np.asarray(w_zero, np.float32).reshape(-1), (cout,)).reshape(-1, 1)
        self.latent = latent.reshape(cout, -1).astype(np.float32)
        q = self._ints()
        info = np.iinfo(q.dtype)
        self.qmin, self.qmax = float(info.min), float(info.max)
        if not self.zero.any():  # symmetric: the range the quantizer used (7-bit weights, reduce_range, stay 7-bit)
            widest = float(np.abs(q.astype(np.int32)).max())
            self.qmin, self.qmax = max(self.qmin, -widest), min(self.qmax, widest)
        self.kernel = latent.shape[2:]
        self.group = int(attrs.get("group", 1))
        self.strides = list(attrs.get("strides", [1, 1]))
        self.dilations = list(attrs.get("dilations", [1, 1]))
        self.pads = list(attrs.get("pads", [0, 0, 0, 0]))

    @classmethod
    def all(cls, model, latent: dict) -> list:
        """A _Layer per convolution that can be fitted (None for the others), in graph order."""
        from onnx import helper

        inits = {i.name: i for i in model.graph.initializer}
        readers: dict[str, int] = {}
        for n in model.graph.node:
            for i in n.input:
                readers[i] = readers.get(i, 0) + 1
        producer = {o: n for n in model.graph.node for o in n.output}
        out = []
        for conv in (n for n in model.graph.node if n.op_type == "Conv"):
            attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
            wdq, x_dq = producer.get(conv.input[1]), producer.get(conv.input[0])
            if (wdq is None or wdq.op_type != "DequantizeLinear" or wdq.input[0] not in inits
                    or readers.get(wdq.input[0]) != 1 or x_dq is None or x_dq.op_type != "DequantizeLinear"
                    or conv.name not in latent or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                    or len(latent[conv.name].shape) != 4):
                out.append(None)
                continue
            bias, bias_scale = _bias(conv, producer, inits, readers)
            scale = _init(inits, wdq.input[1])
            zero = _init(inits, wdq.input[2]) if len(wdq.input) > 2 and wdq.input[2] else np.zeros(1, np.float32)
            layer = cls(conv, inits[wdq.input[0]], scale, zero, latent[conv.name], bias, bias_scale, attrs)
            # only a weight that is the FP32 one rounded to the nearest grid point (the PTQ model's)
            out.append(layer if np.array_equal(layer._nearest(), layer._ints().reshape(layer.latent.shape))
                       else None)
        return out

    def _ints(self) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.weight_q)

    def _nearest(self) -> np.ndarray:
        return np.clip(np.round(self.latent / self.scale) + self.zero, self.qmin, self.qmax)

    def patches(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """The input patches [len(pos), C·kh·kw] of the output positions `pos` ([n, 2]: y, x) from the input map
        `x` [1, C, H, W]."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        t, left, b, r = self.pads
        xp = np.pad(x[0], ((0, 0), (t, b), (left, r)))
        iy = pos[:, :1] * sh + np.arange(kh)[None] * dh  # [n, kh]
        ix = pos[:, 1:] * sw + np.arange(kw)[None] * dw  # [n, kw]
        p = xp[:, iy[:, :, None], ix[:, None, :]]  # [C, n, kh, kw]
        return np.ascontiguousarray(p.transpose(1, 0, 2, 3)).reshape(len(pos), -1).astype(np.float32)

    def fit(self, x: np.ndarray, y: np.ndarray, iterations: int) -> dict:
        """Fit the roundings on input patches `x` [rows, C·kh·kw] and FP32 outputs `y` [rows, Cout]; write the
        chosen integers and the bias into the model. Returns the fit's record."""
        g, cout = self.group, self.latent.shape[0]
        xg = np.ascontiguousarray(x.reshape(len(x), g, -1).transpose(1, 0, 2))  # [groups, rows, K]
        bias = self._bias_value()
        base = np.floor(self.latent / self.scale)
        h = _train(xg, y - bias, base, self, iterations)
        learned = np.clip(base + (h >= 0.5) + self.zero, self.qmin, self.qmax)
        nearest = self._nearest()
        err_l, err_n = self._error(xg, y, learned), self._error(xg, y, nearest)
        keep = err_l < err_n  # per output channel
        ints = np.where(keep[:, None], learned, nearest)
        self._write(ints, bias + (y - self._output(xg, ints) - bias).mean(0))
        scale = float(np.mean(y ** 2)) + 1e-12
        return {"changed": int((ints != nearest).sum()), "channels_learned": int(keep.sum()), "channels": cout,
                "error_nearest": float(err_n.sum() / len(y) / cout / scale),
                "error": float(np.minimum(err_l, err_n).sum() / len(y) / cout / scale)}

    def _output(self, xg: np.ndarray, ints: np.ndarray) -> np.ndarray:
        """The output [rows, Cout] of inputs `xg` [groups, rows, K] with weights `ints` (no bias)."""
        w = ((ints - self.zero) * self.scale).reshape(self.group, -1, xg.shape[2])  # [groups, out per group, K]
        y = np.matmul(xg, w.transpose(0, 2, 1))  # [groups, rows, out per group]
        return y.transpose(1, 0, 2).reshape(xg.shape[1], -1)

    def _error(self, xg, y, ints) -> np.ndarray:
        """Per output channel: the squared error left once the bias has taken the mean (the bias as it is without
        one to write)."""
        resid = y - self._output(xg, ints) - self._bias_value()
        return ((resid - resid.mean(0) if self.bias is not None else resid) ** 2).sum(0)

    def _bias_value(self) -> np.ndarray:
        from onnx import numpy_helper

        if self.bias is None:
            return np.zeros(self.latent.shape[0], np.float32)
        v = numpy_helper.to_array(self.bias).astype(np.float32)
        return v * self.bias_scale if self.bias_scale is not None else v

    def _write(self, ints: np.ndarray, bias: np.ndarray) -> None:
        from onnx import numpy_helper

        q = self._ints()
        self.weight_q.CopyFrom(numpy_helper.from_array(ints.reshape(q.shape).astype(q.dtype), self.weight_q.name))
        if self.bias is None:
            return
        stored = numpy_helper.to_array(self.bias)
        if self.bias_scale is not None:
            bias = np.clip(np.round(bias / self.bias_scale), -2**31, 2**31 - 1)
        self.bias.CopyFrom(numpy_helper.from_array(bias.reshape(stored.shape).astype(stored.dtype), self.bias.name))


def _train(xg: np.ndarray, y: np.ndarray, base: np.ndarray, layer: _Layer, iterations: int) -> np.ndarray:
    """AdaRound's soft roundings h [Cout, K·groups] fitted by Adam to y [rows, Cout] (bias taken off); their start
    the FP32 weight's own fraction."""
    frac = np.clip(layer.latent / layer.scale - base, 0.01, 0.99)
    v = -np.log((ZETA - GAMMA) / (frac - GAMMA) - 1)  # rectified sigmoid's inverse: h(v) = frac
    m, s = np.zeros_like(v), np.zeros_like(v)
    g, rows = xg.shape[:2]
    norm = 2 / rows / (float(np.mean(y ** 2)) + 1e-12)  # the error relative to the output's mean square
    for t in range(1, iterations + 1):
        sig = 1 / (1 + np.exp(-v))
        soft = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(soft, 0, 1)
        q = base + h + layer.zero
        inside = (soft > 0) & (soft < 1) & (q >= layer.qmin) & (q <= layer.qmax)
        ints = np.clip(q, layer.qmin, layer.qmax)
        resid = layer._output(xg, ints) - y  # [rows, Cout]
        # d(mean over rows of the summed squared error) / d(weight), per group: resid_gᵀ · x_g
        rg = resid.reshape(rows, g, -1).transpose(1, 2, 0)  # [groups, out, rows]
        grad_w = norm * np.matmul(rg, xg).reshape(layer.latent.shape)
        grad = grad_w * layer.scale
        progress = (t / iterations - WARMUP) / (1 - WARMUP)
        if progress > 0:
            beta = BETA[0] + (BETA[1] - BETA[0]) * progress
            d = 2 * h - 1
            grad = grad - REG * beta * np.abs(d) ** (beta - 1) * np.sign(d) * 2
        grad = grad * inside * sig * (1 - sig) * (ZETA - GAMMA)
        m = 0.9 * m + 0.1 * grad
        s = 0.999 * s + 0.001 * grad ** 2
        v = v - LR * (m / (1 - 0.9 ** t)) / (np.sqrt(s / (1 - 0.999 ** t)) + 1e-8)
    return np.clip((1 / (1 + np.exp(-v))) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _run(sess, feed: dict) -> dict:
    """{output: value} of an ONNX Runtime session on the feeds it reads."""
    takes = {i.name for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in takes})))


def _init(inits: dict, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name])


def _bias(conv, producer: dict, inits: dict, readers: dict):
    """(bias initializer or None, its scale when stored as int32 behind a DequantizeLinear, else None)."""
    if len(conv.input) < 3 or not conv.input[2]:
        return None, None
    b = conv.input[2]
    if b in inits and readers.get(b) == 1:
        return inits[b], None
    dq = producer.get(b)
    if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits and readers.get(dq.input[0]) == 1:
        return inits[dq.input[0]], _init(inits, dq.input[1]).astype(np.float32)
    return None, None
