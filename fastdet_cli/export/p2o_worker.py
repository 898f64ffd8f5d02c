"""Runs paddle2onnx in its own process (`python -m fastdet_cli.export.p2o_worker ...`).

paddle2onnx's C++ core aborts the whole process on some inputs (e.g. negative quantization scales), so the
parent process runs this worker and turns a crash into a clear error. The worker also reads the Paddle
program: op counts and the multiclass NMS attributes (the parameters host-side NMS must reuse).
Prints one JSON line on stdout.
"""
from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> None:
    from fastdet_cli.paddle_program import load_program, nms_attributes, op_counts

    pdmodel, pdiparams, save_file, opset, deploy_backend = argv[:5]
    prog = load_program(pdmodel)
    info = {"ops": op_counts(prog), "nms": nms_attributes(prog)}
    if save_file != "-":
        import paddle2onnx

        paddle2onnx.export(pdmodel, pdiparams, save_file=save_file, opset_version=int(opset),
                           deploy_backend=deploy_backend, verbose=False, enable_onnx_checker=True)
    print(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1:])
