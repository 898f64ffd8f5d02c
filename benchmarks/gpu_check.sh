#!/usr/bin/env bash
# The first GPU run, ready for the day an NVIDIA GPU is at hand (never run where fastdet was built: no GPU, and
# TensorRT does not install there). On a Linux x86_64 machine with an NVIDIA driver:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default build/gpu_check)
#
# It checks the machine first (Python, an NVIDIA GPU, the driver, and which CUDA flavour of TensorRT that driver
# can run) and says exactly what to install when something is missing. Then it installs the matching TensorRT
# extra into .venv (`trt-cu13` on drivers >= 580, else `trt-cu12` on drivers >= 525: TensorRT 10 for CUDA 12 or 13
# with the matching cuda-python), prints `fastdet env`, exports the embedded model for TensorRT (FP32 and INT8,
# checked against TensorRT's parser rules), builds the engines, and runs the reference's table on the embedded
# model: TensorRT, Paddle-TensorRT (needs paddlepaddle-gpu built with TensorRT; with the CPU wheel `make install`
# puts in, its rows are "skipped" with the reason) and ONNX Runtime, FP32 / INT8 / INT8+FP16 / INT8+FP16+pinned
# memory. With FASTDET_ORT_GPU=1 it swaps onnxruntime for onnxruntime-gpu first (ONNX Runtime's CUDA provider; its
# rows then name the providers that really ran). With FASTDET_PPYOLOE=1 it also runs
# benchmarks/ppyoloe_l_latency.py (PP-YOLOE-l, random weights) on the same backends. Every step's output lands in
# OUT_DIR; a failing step is reported and the next one runs.
set -u
OUT=${1:-build/gpu_check}
mkdir -p "$OUT"
PY=.venv/bin/python
fail() { echo "gpu_check: $*" >&2; exit 2; }
python_version=$(${PYTHON:-python3} -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || fail "no python3 on PATH (set PYTHON=/path/to/python3.11)"
[ "$python_version" = 3.11 ] || fail "Python $python_version: fastdet's lock (requirements.lock) is for Python 3.11; \
install it (e.g. apt install python3.11-venv, or uv python install 3.11) and run PYTHON=python3.11 bash $0"
command -v nvidia-smi >/dev/null || fail "no nvidia-smi: install the NVIDIA driver (>= 525) first"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
[ "$gpus" -gt 0 ] || fail "nvidia-smi -L lists no GPU: this script is for a machine with an NVIDIA GPU"
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
major=${driver%%.*}
if [ "$major" -ge 580 ]; then flavour=cu13; cuda='cuda-python>=13,<14'
elif [ "$major" -ge 525 ]; then flavour=cu12; cuda='cuda-python>=12,<13'
else fail "NVIDIA driver $driver is too old for TensorRT 10: CUDA 12 needs >= 525, CUDA 13 >= 580"
fi
echo "== $gpus GPU(s), driver $driver: TensorRT 10 for CUDA ${flavour#cu} (pip extra trt-$flavour)"
make install >/dev/null || exit 1
$PY -m pip install --quiet "tensorrt-$flavour>=10,<11" "$cuda" \
  || fail "installing TensorRT for $flavour failed: pip install 'fastdet-cli[trt-$flavour]' by hand shows why"
if [ "${FASTDET_ORT_GPU:-0}" = 1 ]; then  # the two wheels share one module: one out, the other in
  $PY -m pip uninstall --quiet -y onnxruntime && $PY -m pip install --quiet 'onnxruntime-gpu==1.31.1' \
    || fail "installing onnxruntime-gpu failed"
fi
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
