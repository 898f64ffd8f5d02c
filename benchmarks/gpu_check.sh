#!/usr/bin/env bash
# The first GPU run, ready for the day an NVIDIA GPU is at hand (never run where fastdet was built: no GPU, and
# TensorRT does not install there). On a Linux x86_64 machine with an NVIDIA driver:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default build/gpu_check)
#
# It installs the `trt` extra (TensorRT 10 + cuda-python) into .venv, prints `fastdet env`, exports the embedded
# model for TensorRT (FP32 and INT8, checked against TensorRT's parser rules), builds the engines, and runs the
# reference's table on the embedded model: TensorRT, Paddle-TensorRT (needs paddlepaddle-gpu built with TensorRT;
# otherwise its rows say why) and ONNX Runtime, FP32 / INT8 / INT8+FP16 / INT8+FP16+pinned memory. With
# FASTDET_PPYOLOE=1 it also runs benchmarks/ppyoloe_l_latency.py (PP-YOLOE-l, random weights) on the same
# backends. Every step's output lands in OUT_DIR; a failing step is reported and the next one runs.
set -u
OUT=${1:-build/gpu_check}
mkdir -p "$OUT"
PY=.venv/bin/python
make install >/dev/null || exit 1
if [ ! -d /proc/driver/nvidia/gpus ]; then
  echo "no NVIDIA GPU visible (/proc/driver/nvidia/gpus): this script is for a GPU machine" >&2
  exit 2
fi
$PY -m pip install --quiet 'tensorrt>=10,<11' 'cuda-python>=12' || { echo "installing the trt extra failed" >&2; exit 1; }
status=0
step() {  # step NAME CMD...: run, keep its log, report
  local name=$1; shift
  echo "== $name"
  if "$@" >"$OUT/$name.log" 2>&1; then echo "   ok ($OUT/$name.log)"; else echo "   FAILED ($OUT/$name.log)"; tail -5 "$OUT/$name.log"; status=1; fi
}
step env $PY -m fastdet_cli env
step export-fp32 $PY -m fastdet_cli export --model default --output "$OUT/trt_fp32" --format trt
step compress $PY -m fastdet_cli compress fastdet_cli/configs/default_ptq.yaml --save-dir "$OUT/ptq"
step export-int8 $PY -m fastdet_cli export --model "$OUT/ptq" --int8 --fp16 --output "$OUT/trt_int8" --format trt
step infer $PY -m fastdet_cli infer --backend trt --json "$OUT/infer.json" "$($PY -c 'from fastdet_cli.data.dataset import resolve_dataset; print(resolve_dataset("default").image_paths(limit=1)[0][1])')"
step bench $PY -m fastdet_cli bench --backend trt,paddle-trt,ort --int8-model "$OUT/ptq" --fp16 --pinned \
  --report "$OUT/report"
if [ "${FASTDET_PPYOLOE:-0}" = 1 ]; then
  step ppyoloe $PY benchmarks/ppyoloe_l_latency.py --work-dir "$OUT/ppyoloe_l" --backends trt,paddle-trt,ort
fi
echo "report: $OUT/report/report.md (merge it with CPU machines' reports: fastdet report merge)"
exit $status
