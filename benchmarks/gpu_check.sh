#!/usr/bin/env bash
# The first GPU run, ready for the day an NVIDIA GPU is at hand (never run where fastdet was built: no GPU, and
# TensorRT does not install there). On a Linux x86_64 machine with an NVIDIA driver, from a clone of fastdet:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default build/gpu_check)
#
# It checks the machine first, in this order, and stops with one line saying what to install: `make`; Python 3.11
# (PYTHON=..., else python3.11, else python3) with venv/ensurepip (Debian/Ubuntu: python3.11-venv); nvidia-smi, a
# GPU and the driver, and which CUDA flavour of TensorRT that driver runs. Then `make install` (.venv) and the
# matching TensorRT extra from the clone (fastdet is not on the package index): pip install -e '.[trt-cu13]' on
# drivers >= 580, else '.[trt-cu12]' on drivers >= 525 (TensorRT 10 for CUDA 12 or 13 with the matching
# cuda-python), the lock's versions kept (-c requirements.lock). It prints `fastdet env`, exports the embedded
# model for TensorRT (FP32 and INT8, checked against TensorRT's parser rules), builds the engines, and runs the
# reference's table on the embedded model: TensorRT, Paddle-TensorRT (needs paddlepaddle-gpu built with TensorRT;
# with the CPU wheel `make install` puts in, its rows are "skipped" with the reason), ONNX Runtime on its CUDA
# provider (ort-gpu: "skipped" with the reason unless FASTDET_ORT_GPU=1 below installed onnxruntime-gpu) and ONNX
# Runtime on the CPU (ort), FP32 / INT8 / INT8+FP16 / INT8+FP16+pinned memory.
#
# FASTDET_ORT_GPU=1 first swaps onnxruntime for onnxruntime-gpu (ONNX Runtime's CUDA provider; the two wheels share
# one module) with its [cuda,cudnn] extras, which bring the CUDA and cuDNN wheels it loads, in the SAME version
# as the onnxruntime installed: where the package index has no such onnxruntime-gpu, or only one built for a CUDA
# this driver cannot run, it says so and leaves ONNX Runtime as it is. FASTDET_ORT_GPU_VERSION=X installs
# onnxruntime-gpu X instead, knowingly replacing the installed ONNX Runtime for every ort row (checked 2026-12-06
# on PyPI: onnxruntime-gpu stops at 1.31.1 while onnxruntime is 1.32.0; 1.27 and later are CUDA 13 builds, which
# need driver >= 580; 1.26.0 is the newest CUDA 12 build). With FASTDET_PPYOLOE=1 it also runs
# benchmarks/ppyoloe_l_latency.py (PP-YOLOE-l, random weights) on the same backends. Every step's output lands in
# OUT_DIR; a failing step is reported and the next one runs.
set -u
fail() { echo "gpu_check: $*" >&2; exit 2; }
case $0 in */*) here=${0%/*} ;; *) here=. ;; esac
OUT=${1:-build/gpu_check}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
cd "$here/.." || fail "cannot enter the clone's root ($here/..)"

# 1. what `make install` needs, before anything is installed
command -v make >/dev/null || fail "no make on PATH: install it first (Debian/Ubuntu: apt install make)"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || echo python3)}
python_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || fail "no Python at '$PYTHON': install Python 3.11 (Debian/Ubuntu: apt install python3.11 python3.11-venv) \
and run PYTHON=python3.11 bash $0"
[ "$python_version" = 3.11 ] || fail "Python $python_version at $PYTHON: fastdet's lock (requirements.lock) is \
for Python 3.11; install it (apt install python3.11 python3.11-venv, or uv python install 3.11) and run \
PYTHON=python3.11 bash $0"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || fail "$PYTHON cannot make a virtual environment (no \
ensurepip): install python3.11-venv (Debian/Ubuntu: apt install python3.11-venv)"

# 2. the GPU, the driver and the CUDA flavour it runs
command -v nvidia-smi >/dev/null || fail "no nvidia-smi: install the NVIDIA driver (>= 525) first"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
[ "${gpus:-0}" -gt 0 ] || fail "nvidia-smi -L lists no GPU: this script is for a machine with an NVIDIA GPU"
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
major=${driver%%.*}
case $major in ''|*[!0-9]*) fail "nvidia-smi gives no driver version (it said '$driver')" ;; esac
if [ "$major" -ge 580 ]; then flavour=cu13
elif [ "$major" -ge 525 ]; then flavour=cu12
else fail "NVIDIA driver $driver is too old for TensorRT 10: CUDA 12 needs >= 525, CUDA 13 >= 580"
fi
echo "== $gpus GPU(s), driver $driver: TensorRT 10 for CUDA ${flavour#cu} (pip extra trt-$flavour)"

# 3. install: .venv from the lock, then the TensorRT extra from this clone
mkdir -p "$OUT"
PY=.venv/bin/python
make install PYTHON="$PYTHON" >/dev/null || fail "make install failed: run it alone to see why"
$PY -m pip install --quiet -c requirements.lock -e ".[trt-$flavour]" \
  || fail "installing TensorRT for $flavour failed: .venv/bin/python -m pip install -e '.[trt-$flavour]' shows why"

ort_gpu_cuda() {  # ort_gpu_cuda VERSION: the CUDA major onnxruntime-gpu VERSION is built for ('' if not on the index)
  local report
  report=$(mktemp)
  if $PY -m pip install --quiet --dry-run --no-deps --ignore-installed --report "$report" \
      "onnxruntime-gpu[cuda,cudnn]==$1" >/dev/null 2>&1; then
    $PY -c 'import json, re, sys
for req in json.load(open(sys.argv[1]))["install"][0]["metadata"].get("requires_dist", []):
    m = re.match(r"nvidia-cuda-runtime(?:-cu(\d+))?\s*~=\s*(\d+)", req)
    if m:
        print(m.group(1) or m.group(2))
        break' "$report"
  fi
  rm -f "$report"
}
status=0
if [ "${FASTDET_ORT_GPU:-0}" = 1 ]; then
  ort_cpu=$($PY -c 'import importlib.metadata as m; print(m.version("onnxruntime"))' 2>/dev/null)
  ort_gpu=${FASTDET_ORT_GPU_VERSION:-$ort_cpu}
  ort_cuda=$(ort_gpu_cuda "$ort_gpu")
  if [ -z "$ort_cpu" ]; then
    echo "== ONNX Runtime on the GPU not installed: no onnxruntime in .venv to match (make install puts it in)"
    status=1
  elif [ -z "$ort_cuda" ]; then
    echo "== ONNX Runtime on the GPU not installed: the package index has no onnxruntime-gpu $ort_gpu (onnxruntime" \
      "$ort_cpu is installed; the GPU wheel is released on its own and can lag). Another version replaces ONNX" \
      "Runtime $ort_cpu for every ort row, CPU rows too: FASTDET_ORT_GPU_VERSION=X FASTDET_ORT_GPU=1 bash $0" \
      "accepts that (.venv/bin/python -m pip index versions onnxruntime-gpu lists X)"
  elif [ "$ort_cuda" -ge 13 ] && [ "$major" -lt 580 ]; then
    echo "== ONNX Runtime on the GPU not installed: onnxruntime-gpu $ort_gpu is built for CUDA $ort_cuda, which" \
      "needs driver >= 580 (this one is $driver); a CUDA 12 build (onnxruntime-gpu <= 1.26 on PyPI) replaces" \
      "ONNX Runtime $ort_cpu for every ort row: FASTDET_ORT_GPU_VERSION=1.26.0 FASTDET_ORT_GPU=1 bash $0"
  else
    [ "$ort_gpu" = "$ort_cpu" ] || echo "== onnxruntime-gpu $ort_gpu replaces onnxruntime $ort_cpu" \
      "(FASTDET_ORT_GPU_VERSION): every ort row, CPU rows too, runs ONNX Runtime $ort_gpu"
    echo "== onnxruntime $ort_cpu -> onnxruntime-gpu[cuda,cudnn] $ort_gpu (CUDA $ort_cuda, CUDA/cuDNN wheels with it)"
    if $PY -m pip uninstall --quiet -y onnxruntime \
        && $PY -m pip install --quiet -c requirements.lock "onnxruntime-gpu[cuda,cudnn]==$ort_gpu"; then
      $PY -c 'import onnxruntime as o; print("   providers:", o.get_available_providers())'
    else
      echo "   installing onnxruntime-gpu failed: onnxruntime $ort_cpu put back"
      $PY -m pip uninstall --quiet -y onnxruntime-gpu >/dev/null 2>&1
      $PY -m pip install --quiet "onnxruntime==$ort_cpu" || fail "onnxruntime $ort_cpu could not be put back"
      status=1
    fi
  fi
fi

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
step bench $PY -m fastdet_cli bench --backend trt,paddle-trt,ort-gpu,ort --int8-model "$OUT/ptq" --fp16 --pinned \
  --report "$OUT/report"
if [ "${FASTDET_PPYOLOE:-0}" = 1 ]; then
  step ppyoloe $PY benchmarks/ppyoloe_l_latency.py --work-dir "$OUT/ppyoloe_l" --backends trt,paddle-trt,ort-gpu,ort
fi
echo "report: $OUT/report/report.md (merge it with CPU machines' reports: fastdet report merge)"
exit $status
