"""ONNX → Paddle program with x2paddle: the reference tool's route for ONNX models, which gives an ONNX detector
every PaddleSlim engine (PTQ with all its calibration methods, QAT with distillation).

The conversion is checked before anything uses it: the Paddle program runs on a real calibration image under
Paddle Inference exactly as fastdet's `paddle` backend runs it (oneDNN, IR optimization on) and must match ONNX
Runtime within `export.onnx.FP32_TOL` of each output's range. A oneDNN fuse pass that breaks a converted program
(measured on the real-weight PicoDet with Paddle 2.6.2: `elementwise_act_onednn_fuse_pass` turns every output
into NaN) is found by trying the program without each known-bad pass; the pass list that made it match is
written into the converted model's fastdet.yml (`paddle_delete_passes`), which the `paddle` backend reads, and
compression carries into the quantized output.

- Hard-swish: paddle2onnx writes it at opset 13 as x · clip(x + 3, 0, 6) / 6, which x2paddle keeps as four ops
  with its constants in tensors; they are fused back into PaddleDetection's one `hard_swish` op
  (`paddle_program.fuse_hardswish_ops`), without which PaddleSlim's quantization of the program is garbage.
- Input names: x2paddle prefixes them (`image` → `x2paddle_image`); the program's variables are renamed back,
  so the model's deploy-config preprocessing feeds it as it fed the ONNX model.
- x2paddle 1.6.0 (its last release) imports `onnx.mapping` and `onnx.version`, which onnx ≥ 1.16 no longer
  has: both are provided from onnx's public API before the import (`_onnx_shims`).
- The converted model is cached by the ONNX file's content hash (cache_dir()/converted/).
"""
from __future__ import annotations

import re
import shutil
import sys
import types
import warnings
from pathlib import Path

import numpy as np

from fastdet_cli.det.model import SIDECAR, ModelSource
from fastdet_cli.errors import FastdetError

CONVERT_VERSION = 2
# oneDNN passes measured to break an x2paddle program, tried in this order (one at a time, then all)
SUSPECT_PASSES = ("elementwise_act_onednn_fuse_pass", "operator_scale_onednn_fuse_pass",
                  "operator_unsqueeze2_onednn_fuse_pass", "operator_reshape2_onednn_fuse_pass")
PREFIX = "x2paddle_"


def _onnx_shims() -> None:
    """`onnx.mapping` and `onnx.version` for x2paddle, built from onnx's public API (onnx ≥ 1.16 removed them)."""
    import onnx

    if "onnx.mapping" not in sys.modules:
        try:
            import onnx.mapping  # noqa: F401
        except ImportError:
            mapping = types.ModuleType("onnx.mapping")
            mapping.TENSOR_TYPE_TO_NP_TYPE = {
                int(v): onnx.helper.tensor_dtype_to_np_dtype(v)
                for v in onnx.TensorProto.DataType.values() if v != onnx.TensorProto.UNDEFINED}
            sys.modules["onnx.mapping"] = onnx.mapping = mapping
    if "onnx.version" not in sys.modules:
        try:
            with warnings.catch_warnings():  # deprecated in onnx ≥ 1.19, still importable
                warnings.simplefilter("ignore", DeprecationWarning)
                import onnx.version  # noqa: F401
        except ImportError:
            version = types.ModuleType("onnx.version")
            version.version = onnx.__version__
            sys.modules["onnx.version"] = onnx.version = version


def x2paddle_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("x2paddle")
    except PackageNotFoundError:
        return None


def rename_inputs(pdmodel: Path) -> dict[str, str]:
    """Rename the program's `x2paddle_<name>` inputs (and every use of them) back to `<name>`, in place."""
    from fastdet_cli.paddle_program import feed_names, load_program

    prog = load_program(pdmodel)
    renames = {f: f[len(PREFIX):] for f in feed_names(prog) if f.startswith(PREFIX)}
    if not renames:
        return {}
    taken = {v.name for b in prog.blocks for v in b.vars}
    clash = [new for new in renames.values() if new in taken]
    if clash:
        raise FastdetError(f"x2paddle's program already has a variable named {clash[0]}: cannot restore the input name")
    for block in prog.blocks:
        for var in block.vars:
            if var.name in renames:
                var.name = renames[var.name]
        for op in block.ops:
            for slot in list(op.inputs) + list(op.outputs):
                slot.arguments[:] = [renames.get(a, a) for a in slot.arguments]
    pdmodel.write_bytes(prog.SerializeToString())
    return renames


def _paddle_outputs(model_dir: Path, feed: dict[str, np.ndarray], delete: tuple[str, ...]) -> list[np.ndarray]:
    """The program's outputs under Paddle Inference as the `paddle` backend runs it, with `delete` passes off (the
    runner reads them from the model's fastdet.yml, written here first)."""
    import yaml

    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import BACKENDS, create_runner

    (model_dir / SIDECAR).write_text(yaml.safe_dump({"paddle_delete_passes": list(delete)}))
    with create_runner(BACKENDS["paddle"], model_dir, RunnerOptions(threads=1)) as runner:
        return runner.infer(feed)


def compare(reference: list[np.ndarray], outs: list[np.ndarray]) -> float | None:
    """The largest |difference| over outputs as a fraction of each reference output's range (None: NaN/shape)."""
    if len(outs) != len(reference):
        return None
    worst = 0.0
    for r, o in zip(reference, outs):
        if o.shape != r.shape or not np.all(np.isfinite(o)):
            return None
        span = max(1.0, float(r.max() - r.min()))  # as export.onnx.validate_export: of the range, at least 1
        worst = max(worst, float(np.max(np.abs(o.astype(np.float64) - r))) / span)
    return worst


def validate(source: ModelSource, model_dir: Path, feed: dict[str, np.ndarray], log=print) -> dict:
    """Run the converted program against the ONNX model on `feed`; returns the sidecar record (passes deleted,
    the difference) or raises when no pass list makes it match."""
    from fastdet_cli.export.onnx import FP32_TOL
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import BACKENDS, create_runner

    with create_runner(BACKENDS["ort"], source.path, RunnerOptions(threads=1)) as ort:
        reference = ort.infer(feed)
    tried = []
    for delete in [(), *((p,) for p in SUSPECT_PASSES), SUSPECT_PASSES]:
        diff = compare(reference, _paddle_outputs(model_dir, feed, delete))
        tried.append((delete, diff))
        if diff is not None and diff <= FP32_TOL:
            if delete:
                log(f"the converted program gives {'NaN' if tried[0][1] is None else 'wrong outputs'} with Paddle "
                    f"Inference's {', '.join(delete)}: that pass is switched off for this model")
            return {"paddle_delete_passes": list(delete), "validation_max_rel_diff": float(f"{diff:.3g}")}
    said = "; ".join(f"{'+'.join(d) or 'all passes'}: {'NaN or wrong shape' if x is None else f'{x:.3g}'}"
                     for d, x in tried)
    raise FastdetError(f"x2paddle's conversion of {source.path.name} does not match ONNX Runtime on a real image "
                       f"(largest difference as a fraction of the output's range; allowed {FP32_TOL:g}): {said}")


def convert(source: ModelSource, out_dir: Path, feed: dict[str, np.ndarray], log=print) -> ModelSource:
    """Convert the ONNX model `source` into the Paddle model folder `out_dir` (model.pdmodel/pdiparams, the deploy
    config, fastdet.yml with the conversion record), validated on `feed` (one preprocessed real image)."""
    import onnx
    import yaml

    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.outputs import atomic_dir, library_output_to
    from fastdet_cli.lazy import require
    from fastdet_cli.onnx_graph import split_hardswish
    from fastdet_cli.paddle_program import fuse_hardswish_ops

    if source.format != "onnx":
        raise FastdetError(f"{source.path} is not an ONNX model")
    require("x2paddle", "paddle", "the x2paddle route (ONNX → Paddle program)")
    _onnx_shims()
    with atomic_dir(out_dir) as tmp:
        work = tmp / "x2paddle"
        from x2paddle.convert import onnx2paddle

        # x2paddle has no HardSwish (opset 14): written as the opset-13 pieces, fused again in the program
        graph = onnx.load(str(source.path))
        split = split_hardswish(graph)
        onnx_in = source.path
        if split:
            onnx_in = tmp / "split.onnx"
            onnx.save(graph, str(onnx_in))
        try:
            with library_output_to(tmp / "x2paddle.log"):
                onnx2paddle(str(onnx_in), str(work), convert_to_lite=False, enable_onnx_checker=False,
                            disable_feedback=True)
        except (Exception, SystemExit) as e:  # x2paddle raises bare Exceptions and calls sys.exit on unknown ops
            said = (tmp / "x2paddle.log").read_text(errors="replace") if (tmp / "x2paddle.log").exists() else ""
            unsupported = re.findall(r"^=+ (\w+) =+$", said.split("not supported yet", 1)[-1], re.M)
            why = f"ops it does not support: {', '.join(unsupported)}" if unsupported else (
                said.strip().splitlines() or [str(e)])[-1]
            raise FastdetError(f"x2paddle could not convert {source.path.name}: {why}") from None
        (tmp / "split.onnx").unlink(missing_ok=True)
        made = work / "inference_model"
        if not (made / "model.pdmodel").exists():
            raise FastdetError(f"x2paddle wrote no program for {source.path.name} (see its log)")
        for name in ("model.pdmodel", "model.pdiparams"):
            shutil.move(str(made / name), str(tmp / name))
        shutil.rmtree(work)
        (tmp / "x2paddle.log").unlink(missing_ok=True)
        renamed = rename_inputs(tmp / "model.pdmodel")
        fused = fuse_hardswish_ops(tmp)
        shutil.copyfile(source.deploy.path, tmp / source.deploy.path.name)
        record = validate(source, tmp, feed, log)
        side = {"converted_from": str(source.path), "converter": f"x2paddle {x2paddle_version()}",
                "inputs_renamed": renamed, "hard_swish_fused": fused, **record}
        (tmp / SIDECAR).write_text(yaml.safe_dump(side, sort_keys=False))
    return resolve_model(out_dir)


def converted(source: ModelSource, feed: dict[str, np.ndarray], log=print) -> ModelSource:
    """`source` (ONNX) as a validated Paddle program, cached by content hash."""
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.paths import cache_dir

    out = cache_dir() / "converted" / f"{source.content_hash()[:24]}-x2paddle-v{CONVERT_VERSION}"
    if (out / "model.pdmodel").exists() and (out / SIDECAR).exists():
        return resolve_model(out)
    log(f"converting {source.path.name} to a Paddle program with x2paddle (the reference's ONNX route)")
    return convert(source, out, feed, log)
