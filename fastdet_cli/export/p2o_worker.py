"""Runs paddle2onnx in its own process (`python -m fastdet_cli.export.p2o_worker ...`).

paddle2onnx's C++ core aborts the whole process on some inputs (e.g. negative quantization scales), so the
parent process runs this worker and turns a crash into a clear error. The worker also reads the Paddle
program: op counts and the multiclass_nms3 attributes (the parameters host-side NMS must reuse).
Prints one JSON line on stdout.
"""
from __future__ import annotations

import json
import sys
from collections import Counter

_ATTR_FIELDS = {0: "i", 1: "f", 2: "s", 6: "b", 9: "l", 12: "float64"}


def program_info(pdmodel: str) -> dict:
    try:
        import pycocotools.mask  # noqa: F401  (before paddle: zlib clash)
    except ImportError:
        pass
    from paddle.base.proto import framework_pb2

    prog = framework_pb2.ProgramDesc()
    with open(pdmodel, "rb") as f:
        prog.ParseFromString(f.read())
    ops = Counter()
    nms = None
    for block in prog.blocks:
        for op in block.ops:
            ops[op.type] += 1
            if op.type in ("multiclass_nms3", "multiclass_nms2", "multiclass_nms") and nms is None:
                nms = {}
                for a in op.attrs:
                    field = _ATTR_FIELDS.get(a.type)
                    if field and a.name in ("background_label", "score_threshold", "nms_top_k", "nms_threshold",
                                            "nms_eta", "keep_top_k", "normalized"):
                        nms[a.name] = getattr(a, field)
    return {"ops": dict(ops), "nms": nms}


def main(argv: list[str]) -> None:
    pdmodel, pdiparams, save_file, opset, deploy_backend = argv[:5]
    info = program_info(pdmodel)
    if save_file != "-":
        import paddle2onnx

        paddle2onnx.export(pdmodel, pdiparams, save_file=save_file, opset_version=int(opset),
                           deploy_backend=deploy_backend, verbose=False, enable_onnx_checker=True)
    print(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1:])
