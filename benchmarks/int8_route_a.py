"""Route (a) of ONNX Runtime INT8, built for measurement: PaddleSlim's quantized program (Q/DQ on convolution
inputs only) exported to ONNX, then every convolution's *output* quantized to uint8 with an asymmetric range
calibrated on the calibration images (through the model's own preprocessing), so ORT can fuse QLinearConv.
The other route is `fastdet compress --engine onnxruntime`; docs/performance.md compares the two.

    python benchmarks/int8_route_a.py PADDLESLIM_INT8_DIR OUT_DIR [--images 32]
then time it with benchmarks/int8_routes.py and measure mAP with `fastdet eval -m OUT_DIR -b ort`.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("int8_model", help="a PaddleSlim quantized model dir (fastdet compress output)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, default=32, help="calibration images (the generated calib split)")
    args = ap.parse_args()

    from fastdet_cli.compress.common import FeedSamples, image_list
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.export.qdq import calibrate_conv_outputs, quantize_conv_outputs

    src = onnx_for(resolve_model(args.int8_model))
    inputs = ["image", "scale_factor"]
    samples = FeedSamples(src, image_list("default", args.images), inputs)
    import onnx

    names = [i.name for i in onnx.load(str(src.path), load_external_data=False).graph.input]
    feeds = [{k: v[None] for k, v in samples[i].items() if k in names} for i in range(len(samples))]
    ranges = calibrate_conv_outputs(src.path, feeds)
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src.dir, tmp)
    n = quantize_conv_outputs(src.path, tmp / "model.onnx", ranges)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"{n} convolution outputs quantized (uint8, asymmetric, {len(feeds)} calibration images) → {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
