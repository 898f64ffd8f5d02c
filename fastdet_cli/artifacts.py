"""The one place that turns (model, backend, precision) into what that backend runs.

- FP32: a backend that loads ONNX gets the model's ONNX form: the model itself when it is ONNX, else fastdet's
  validated, NMS-free export, cached by content hash (`onnx_for`); a backend that loads a Paddle program gets the
  program (an ONNX model is refused with a clear message).
- INT8: one quantized model does not suit every runtime: ONNX Runtime runs PaddleSlim's export (Q/DQ on
  convolution inputs only) in float, but fuses ONNX Runtime's own QDQ graph into integer kernels; Paddle Inference
  runs only a Paddle program. Several INT8 artifacts can be given; each backend takes the first kind in its
  preference (`BackendSpec.int8_kinds`, measured in docs/performance.md). Kinds: `paddle-program` (PaddleSlim
  output: a quantized Paddle program; ONNX backends run its fastdet export), `ort-qdq` (the onnxruntime engine's
  ONNX), `onnx-qdq` (any other quantized ONNX).

It sits above det/ (the detector receives a ready artifact) and export/ (the exporter never imports the detector).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastdet_cli.det.model import SIDECAR, ModelSource, resolve_model
from fastdet_cli.errors import FastdetError
from fastdet_cli.paths import cache_dir
from fastdet_cli.runtime.registry import BackendSpec

if TYPE_CHECKING:
    from fastdet_cli.det.pipeline import Detector
    from fastdet_cli.runtime.base import RunnerOptions


def onnx_for(source: ModelSource, target: str = "onnxruntime") -> ModelSource:
    """The ONNX form of a model: itself if ONNX, else an NMS-free export (`target`: the ONNX Runtime or the
    TensorRT flavour, export_onnx) cached by content hash."""
    if source.format == "onnx":
        return source
    from fastdet_cli.export.onnx import EXPORT_VERSION, export_onnx

    from fastdet_cli.machine import int8_weight_bits

    from fastdet_cli.export.targets import DEFAULT_TARGET, ONNX_TARGETS

    flavour = "" if target == DEFAULT_TARGET else f"-{target}"
    bits = int8_weight_bits(ONNX_TARGETS[target].gpu)[0]  # what export_onnx picks here
    out = cache_dir() / "exports" / f"{source.content_hash()[:24]}-v{EXPORT_VERSION}{flavour}-w{bits}"
    if not (out / "model.onnx").exists():
        export_onnx(source, out, remove_nms=True, target=target)
    return resolve_model(out)


def nms_free_onnx(source: ModelSource) -> ModelSource:
    """The ONNX form without NMS in the graph (what quantizers and host NMS need): `onnx_for`, and for an ONNX
    model that holds NonMaxSuppression a copy cut before it (export.onnx.cut_onnx_nms), cached by content hash."""
    from fastdet_cli.onnx_graph import nms_score_threshold

    src = onnx_for(source)
    if nms_score_threshold(src.path) is None:
        return src
    from fastdet_cli.export.onnx import EXPORT_VERSION, cut_onnx_nms

    out = cache_dir() / "exports" / f"{src.content_hash()[:24]}-cut-v{EXPORT_VERSION}"
    if not (out / "model.onnx").exists():
        cut_onnx_nms(src, out)
    return resolve_model(out)


FP32_REWRITE_VERSION = 1


def rewritten_fp32(source: ModelSource) -> tuple[ModelSource, str] | None:
    """`source` (an ONNX model) with the lossless rewrites fastdet makes, and what was rewritten: hard-swishes written
    as Add → Clip → Mul → Div fused into one HardSwish node (onnx_graph.fuse_hardswish). Cached by content hash and
    checked on a real input against the graph as given (outputs within 1e-4 × max(1, range)); None when no
    rewrite applies or the outputs differ."""
    if source.format != "onnx":
        return None
    out = cache_dir() / "exports" / f"{source.content_hash()[:24]}-fp32-rewritten-v{FP32_REWRITE_VERSION}"
    if not (out / "rewrites.json").exists():
        _write_rewritten(source, out)
    done = json.loads((out / "rewrites.json").read_text())
    if not done.get("applied"):
        return None
    return resolve_model(out), done["applied"]


def _write_rewritten(source: ModelSource, out: Path) -> None:
    import shutil

    import numpy as np
    import onnx
    import yaml

    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.outputs import atomic_dir
    from fastdet_cli.onnx_graph import fuse_hardswish
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    with atomic_dir(out) as tmp:
        model = onnx.load(str(source.path))
        fused = fuse_hardswish(model)
        applied, why = (f"hard-swish fused ({fused})" if fused else ""), ""
        if fused:
            onnx.save(model, str(tmp / "model.onnx"))
            shutil.copy2(source.deploy.path, tmp / source.deploy.path.name)
            if source.sidecar():
                (tmp / SIDECAR).write_text(yaml.safe_dump(source.sidecar(), sort_keys=False))
            feed = sample_inputs(source.deploy)
            with create_runner("ort", source.path, RunnerOptions(threads=1)) as a, \
                    create_runner("ort", tmp / "model.onnx", RunnerOptions(threads=1)) as b:
                ref = a.infer({k: feed[k] for k in a.input_metadata()})
                got = b.infer({k: feed[k] for k in b.input_metadata()})
            worst = max(float(np.abs(x - y).max() / max(1.0, float(np.ptp(x)))) if x.size else 0.0
                        for x, y in zip(ref, got))
            if worst > 1e-4:  # not the same function: the graph as given stays the FP32 baseline
                applied, why = "", f"rewritten outputs differ from the graph as given ({worst:.2e} of their range)"
                (tmp / "model.onnx").unlink()
        (tmp / "rewrites.json").write_text(json.dumps({"applied": applied, "why": why}))


@dataclass(frozen=True)
class Fp32Form:
    """The FP32 graph a backend's FP32 rows run: the fastest of the model as given and its rewritten form
    (`rewritten_fp32`), timed alternately on that backend."""

    model: ModelSource  # what the FP32 rows run
    as_given: ModelSource  # the user's graph in the form this backend loads (an ONNX model's NMS cut)
    rewrite: str = ""  # what `model` rewrote ("hard-swish fused (34)"); "" when it is the graph as given
    timing: str = ""  # the alternate timing that chose, when there was a choice

    def as_dict(self) -> dict:
        return {"graph": self.rewrite or "as given", "as_given": str(self.as_given.path),
                "model": str(self.model.path), "chosen_by": self.timing}


REWRITE_MARGIN = 1.03  # a rewritten graph runs the FP32 rows when it is at least 3% faster than the graph as given
# (two 2-s alternate timings of the same pair moved by 2% on a shared 2-core machine)


def best_fp32(source: ModelSource, spec: BackendSpec, threads: int = 1) -> Fp32Form:
    """The best FP32 graph fastdet can make of `source` for `backend`, without changing its outputs: the model as
    given (an ONNX model's NMS cut, as every INT8 form has it) or its rewritten form, whichever runs faster on
    `backend` with `threads` threads (timed alternately, runtime.timing.alternate_ms; the rewrite must win by 3%).
    Fusions a backend makes on its own change nothing there (OpenVINO fuses hard-swish's pieces itself, and runs
    the fused node slower), so the choice is measured per backend, not assumed. Backends that load Paddle
    programs, and GPU-only backends (TensorRT fuses on its own), run the model as given."""
    from fastdet_cli.data.synth import sample_inputs
    from fastdet_cli.runtime.timing import alternate_ms

    as_given = nms_free_onnx(source) if spec.model_format == "onnx" else source
    rewritten = rewritten_fp32(as_given) if spec.model_format == "onnx" and not spec.gpu_only else None
    if rewritten is None:
        return Fp32Form(as_given, as_given)
    model, what = rewritten
    opts = spec.mode_options("fp32", threads)
    feed = sample_inputs(as_given.deploy)
    with detector(as_given, spec, opts) as a, detector(model, spec, opts) as b:
        given_ms, rewritten_ms = alternate_ms([(a.runner, {k: feed[k] for k in a.inputs}),
                                               (b.runner, {k: feed[k] for k in b.inputs})], min_seconds=2.0)
    timing = (f"{spec.name}, {threads} thread(s), timed alternately: as given {given_ms:.2f} ms, "
              f"{what} {rewritten_ms:.2f} ms")
    if rewritten_ms * REWRITE_MARGIN <= given_ms:
        return Fp32Form(model, as_given, what, timing)
    return Fp32Form(as_given, as_given, "", timing)


def for_backend(source: ModelSource, spec: BackendSpec) -> ModelSource:
    """`source` in the format `spec`'s backend loads (BackendSpec.model_format, in its ONNX flavour)."""
    if spec.model_format == "onnx":
        return onnx_for(source, spec.onnx_target)
    if source.format != spec.model_format:
        raise FastdetError(f"backend '{spec.name}' runs Paddle models; {source.path} is ONNX")
    return source


def static_input_shapes(source: ModelSource) -> dict[str, tuple]:
    """Fixed shapes of the model's inputs, from its deploy config's preprocessing of a real image (engines are
    built for them)."""
    from fastdet_cli.data.synth import sample_inputs

    return {k: tuple(v.shape) for k, v in sample_inputs(source.deploy).items()}


def detector(model: str | Path | ModelSource | None, spec: BackendSpec,
             options: RunnerOptions | None = None) -> Detector:
    """A Detector for `model` on `spec`'s backend (use as a context manager): the model resolved (`default` =
    the embedded one) and turned into the artifact that backend runs."""
    from fastdet_cli.det.pipeline import Detector
    from fastdet_cli.runtime.base import RunnerOptions

    options = options or RunnerOptions()
    spec.check_can_run()  # a missing library or GPU too: not after a full export
    source = for_backend(model if isinstance(model, ModelSource) else resolve_model(form_for(model, spec)), spec)
    if spec.static_shapes and not options.input_shapes:
        import dataclasses

        options = dataclasses.replace(options, input_shapes=static_input_shapes(source))
    return Detector(source, spec, options)


def is_quantized(source: ModelSource) -> bool:
    """The model holds quantize ops (a Paddle program's quantize_linear…, an ONNX graph's QuantizeLinear)."""
    if source.format == "paddle":
        from fastdet_cli.paddle_program import QUANT_OPS, load_program, op_counts, paddle_model_files

        return any(k in op_counts(load_program(paddle_model_files(source.dir)[0])) for k in QUANT_OPS)
    import onnx

    if source.sidecar().get("quantized"):
        return True
    graph = onnx.load(str(source.path), load_external_data=False).graph
    return any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in graph.node)


KIND_LABELS = {"paddle-program": "PaddleSlim program", "ort-qdq": "ORT-quantized ONNX", "onnx-qdq": "INT8 ONNX"}


@dataclass(frozen=True)
class Int8Artifact:
    path: Path  # the model dir
    kind: str
    method: str  # PTQ, PTQ (ORT), QAT-distillation, INT8 (given)
    target: str = "onnxruntime"  # an ONNX artifact's flavour (fastdet.yml: target); a program suits every target
    warning: str | None = None  # compress missed the accuracy budget it was given (budget_warning)

    def as_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "method": self.method, "target": self.target,
                "warning": self.warning}

    def suits(self, onnx_target: str) -> bool:
        """Loadable by a backend wanting that ONNX flavour: a program is exported in any flavour, and the ONNX
        Runtime flavour's runtimes load TensorRT's too, not the reverse (TensorRT: no uint8, no int32 biases)."""
        from fastdet_cli.export.targets import ONNX_TARGETS

        return self.target in ("any", onnx_target) or ONNX_TARGETS[onnx_target].loads_others


def budget_warning(model_dir: Path, name: str | None = None) -> str | None:
    """A plain warning when `fastdet compress` wrote this model without meeting its accuracy budget
    (compress_report.json: "met": false), for every command that runs it to repeat. `name`: how to call the model
    (default: its folder's name)."""
    report = Path(model_dir) / "compress_report.json"
    if not report.is_file():
        return None
    data = json.loads(report.read_text())
    if data.get("met") is not False:
        return None
    s = data.get("sensitivity_search") or {}
    return (f"warning: {name or Path(model_dir).name} missed the accuracy budget it was compressed for: mAP drop "
            f"{s.get('chosen_drop_points', '?')} points > {s.get('max_drop_points', '?')} on "
            f"{Path(str(s.get('dataset', '?'))).name} ({s.get('stopped', 'search ended')}); it is the best model found "
            "(compress_report.json: met false)")


def forms(path: str | Path | ModelSource) -> dict[str, Path]:
    """The INT8 forms in a folder written by one `fastdet compress` for several deploy targets ({target: model
    folder}, from its compress_report.json's `forms`); {} for anything else."""
    if isinstance(path, ModelSource) or str(path) == "default":
        return {}
    report = Path(path).expanduser() / "compress_report.json"
    if not report.is_file():
        return {}
    try:
        listed = json.loads(report.read_text()).get("forms") or {}
    except (ValueError, AttributeError):
        return {}
    return {t: report.parent / f["dir"] for t, f in listed.items()}


def describe_all(spec: str | Path) -> list[Int8Artifact]:
    """The INT8 artifacts at `spec`: one model, or every form of a multi-form compress output."""
    found = forms(spec)
    return [describe(d) for d in found.values()] if found else [describe(spec)]


def form_for(model, spec: BackendSpec):
    """`model`, or where it is a multi-form compress output, the form `spec`'s backend runs best (`choose`)."""
    return choose(spec, describe_all(model)).path if forms(model) else model


def describe(spec: str | Path) -> Int8Artifact:
    """The INT8 artifact at `spec`; an FP32 model is an error (benchmarking it as INT8 would be a lie)."""
    source = resolve_model(spec)
    report = source.dir / "compress_report.json"
    method = json.loads(report.read_text()).get("method_label", "INT8") if report.exists() else "INT8 (given)"
    if source.format == "paddle":
        quantized = is_quantized(source)
        kind = "paddle-program"
    else:
        quantized = is_quantized(source)
        side = source.sidecar()
        # the onnxruntime engine's graph for ORT (outputs quantized: integer kernels) or TensorRT; its OpenVINO
        # form (Q/DQ on convolution inputs only) is an INT8 ONNX like any other
        from fastdet_cli.export.targets import DEFAULT_TARGET, ONNX_TARGETS, made_by_ort

        flavour = ONNX_TARGETS.get(side.get("target", DEFAULT_TARGET))
        kind = "ort-qdq" if made_by_ort(side) and flavour and flavour.conv_outputs else "onnx-qdq"
    if not quantized:
        raise FastdetError(f"{source.path} is not a quantized model (no quantize ops): compress it first "
                           "(fastdet compress), or pass it as --model")
    target = source.sidecar().get("target", "onnxruntime") if source.format == "onnx" else "any"
    return Int8Artifact(source.dir, kind, method, target, budget_warning(source.dir))


def choose(spec: BackendSpec, artifacts: list[Int8Artifact]) -> Int8Artifact:
    """The artifact `spec`'s backend runs best among `artifacts` (its preference order, BackendSpec.int8_kinds);
    UnsupportedMode (a "None" cell) when it can run none of them."""
    from fastdet_cli.errors import UnsupportedMode

    prefs = spec.int8_kinds
    for kind in prefs:
        fits = [a for a in artifacts if a.kind == kind and a.suits(spec.onnx_target)]
        if fits:  # its own flavour first (ONNX Runtime loads TensorRT's too, and runs its own better)
            return min(fits, key=lambda a: a.target not in ("any", spec.onnx_target))
    have = ", ".join(sorted({KIND_LABELS[a.kind] for a in artifacts})) or "none"
    want = " or ".join(KIND_LABELS[k] for k in prefs)
    raise UnsupportedMode(f"{spec.name} runs a {want}; given: {have}")

