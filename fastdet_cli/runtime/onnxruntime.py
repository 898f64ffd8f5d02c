"""ONNX Runtime backend: CPU (intra-op threads fixed, default 1) or the CUDA execution provider; `OrtGpuRunner`
(backend `ort-gpu`, bench's ONNX Runtime GPU rows) is the same runner always on the GPU.

On device "gpu" the session asks for CUDAExecutionProvider with CPUExecutionProvider after it (ORT places the ops
CUDA has no kernel for on the CPU), only when onnxruntime-gpu is installed (else MissingDependency with the pip
command) and a GPU is visible (else NoDevice). `OrtRunner.providers` holds the providers the session really
has (`InferenceSession.get_providers()`), CPU sessions included; the kernels line names them. Written to ONNX
Runtime's documented API and checked with a stand-in module: never run on a GPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastdet_cli.errors import FastdetError, MissingDependency, NoDevice
from fastdet_cli.runtime.base import Kernels, OpTime, Runner, RunnerOptions, TensorMeta

# ORT kernels that compute in 8-bit integers (QLinear* / *Integer ops of the com.microsoft and onnx domains)
INT8_OPS = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QLinearAdd", "QLinearMul",
            "QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool", "QLinearAveragePool",
            "QLinearConcat", "QLinearSoftmax", "QGemm", "DynamicQuantizeMatMul", "MaxPool_uint8"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def op_precision(op_type: str) -> str:
    return "int8" if op_type in INT8_OPS else "q/dq" if op_type in QDQ_OPS else "float"


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
ORT_GPU_HINT = ("pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]=={version}' (the two "
                "wheels share one module; [cuda,cudnn] brings the CUDA and cuDNN wheels; the same version as the "
                "onnxruntime installed, where the index has it: benchmarks/gpu_check.sh with FASTDET_ORT_GPU=1 "
                "checks)")


def check_cuda_provider(ort, what: str) -> None:
    """The checks before a session is asked for the GPU: ONNX Runtime has its CUDA execution provider (the
    onnxruntime-gpu wheel; MissingDependency naming the pip command) and an NVIDIA GPU is visible to this process
    (NoDevice; CUDA_VISIBLE_DEVICES="" hides every GPU). `ort` is the imported onnxruntime module."""
    from fastdet_cli.runtime.registry import require_gpu

    available = list(ort.get_available_providers())
    if CUDA_EP not in available:
        version = getattr(ort, "__version__", "<version>")
        raise MissingDependency("onnxruntime-gpu", "base", f"{what} (this onnxruntime {version} has only "
                                f"{', '.join(available)})", hint=ORT_GPU_HINT.format(version=version))
    require_gpu(what)


def gpu_providers(ort, gpu_id: int) -> tuple[list, str]:
    """The providers list for a GPU session (CUDA first, the CPU for the ops CUDA has no kernel for), after
    loading the CUDA/cuDNN libraries of the nvidia-* wheels ([cuda,cudnn]) where this ONNX Runtime can
    (`preload_dlls`, ORT >= 1.21); returns what the loader printed (it names what failed to load)."""
    import contextlib
    import io

    said = io.StringIO()
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(said):
            try:
                ort.preload_dlls()
            except Exception as e:  # a loader failure is the session's to report: it starts without CUDA
                print(f"preload_dlls: {e}")
    return [(CUDA_EP, {"device_id": gpu_id}), CPU_EP], " ".join(said.getvalue().split())


class OrtRunner(Runner):
    """`providers`: the execution providers the session really has, best first (set by activate; a bench row
    shows them in its kernels line)."""

    name = "ort"
    providers: tuple[str, ...] = ()
    gpu_what = "backend 'ort' on gpu"  # who needs the GPU, in the errors of the checks before a GPU session

    def _activate(self) -> None:
        import onnxruntime as ort

        o = self.options
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: ORT warns about every unused initializer paddle2onnx leaves
        so.intra_op_num_threads = o.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if o.graph_optimization == "basic"
                                       else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        if o.profile:
            import tempfile

            self._profile_dir = tempfile.TemporaryDirectory(prefix="fastdet-ort-profile-")
            so.enable_profiling = True
            so.profile_file_prefix = f"{self._profile_dir.name}/ort"
        for key, value in o.ort_session_config.items():
            so.add_session_config_entry(key, str(value))
        loader_said = ""
        if o.device == "gpu":
            check_cuda_provider(ort, self.gpu_what)
            providers, loader_said = gpu_providers(ort, o.gpu_id)
        else:
            providers = [CPU_EP]
        try:
            model = self.model_bytes if self.model_bytes is not None else str(self.model_path)
            self.session = ort.InferenceSession(model, so, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable/invalid models
            raise FastdetError(f"ONNX Runtime cannot load {self.model_path}: {str(e).splitlines()[0]}") from e
        self.providers = tuple(self.session.get_providers())
        if o.device == "gpu":
            if CUDA_EP not in self.providers:
                # ORT falls back to the CPU when CUDA or cuDNN cannot be loaded, and says so only on stdout
                built = getattr(ort, "cuda_version", "") or "?"
                said = f"; the CUDA/cuDNN loader said: {loader_said}" if loader_said else ""
                raise NoDevice(f"ONNX Runtime could not start its CUDA execution provider (built for CUDA {built}; "
                               "its CUDA/cuDNN libraries not loadable — pip install 'onnxruntime-gpu[cuda,cudnn]' of "
                               "this version brings them — or a driver older than that CUDA needs): the session "
                               f"has only {', '.join(self.providers)}{said}")
            # a run that fails on CUDA would otherwise be retried on the CPU for good, timed as if on the GPU
            self.session.disable_fallback()
        self._outputs = [x.name for x in self.session.get_outputs()]

    def float_islands(self) -> dict | None:
        if self.model_bytes is not None or self.options.device != "cpu":
            return None
        return float_islands(self.model_path)

    def _kernels(self, feed: dict[str, np.ndarray]) -> Kernels | None:
        if self.options.device == "gpu":
            return Kernels({}, "execution providers: " + ", ".join(self.providers))
        from fastdet_cli.machine import cpu_model_and_flags

        flags = cpu_model_and_flags()[1]
        int8 = self.options.precision == "int8"
        isa = mlas_isa(flags, int8)
        counts = {isa: 0} if not int8 else {isa: 0, mlas_isa(flags, False): 0}  # float parts of an INT8 model
        return Kernels(counts, "CPU flags: MLAS picks by CPUID")

    def _input_metadata(self) -> dict[str, TensorMeta]:
        return {i.name: TensorMeta(np.dtype(_ORT_TYPES.get(i.type, np.float32)), tuple(i.shape))
                for i in self.session.get_inputs()}

    def _output_names(self) -> list[str]:
        return list(self._outputs)

    def _infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self._outputs, feed)

    def _op_profile(self, feed: dict[str, np.ndarray], runs: int) -> list[OpTime]:
        import json

        for _ in range(runs):
            self.session.run(self._outputs, feed)
        with open(self.session.end_profiling()) as f:
            events = json.load(f)
        # the profile covers every run since the session was built: keep the last `runs` (warm-up excluded)
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-runs:]
        start = spans[0][0] if spans else 0
        total: dict[str, list] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e.get("ts", 0) >= start:
                node = e["name"][: -len("_kernel_time")]
                entry = total.setdefault(node, [e.get("args", {}).get("op_name", "?"), 0.0])
                entry[1] += e.get("dur", 0) / 1000.0  # µs → ms
        return [OpTime(node, op, op_precision(op), ms / max(1, len(spans))) for node, (op, ms) in total.items()]

    def _deactivate(self) -> None:
        del self.session
        if getattr(self, "_profile_dir", None) is not None:
            self._profile_dir.cleanup()
            self._profile_dir = None


class OrtGpuRunner(OrtRunner):
    """ONNX Runtime on its CUDA execution provider, always (backend `ort-gpu`: bench's ONNX Runtime GPU rows, where
    `ort` rows run on the CPU provider). `check_available` is BackendSpec.check_can_run's check before any model
    work: the CUDA provider in this onnxruntime (the onnxruntime-gpu wheel) and a visible GPU. Written to ONNX
    Runtime's documented API and checked with a stand-in module: never run on a GPU."""

    name = "ort-gpu"
    gpu_what = "backend 'ort-gpu'"

    def __init__(self, model_path: Path | bytes, options: RunnerOptions | None = None):
        import dataclasses

        super().__init__(model_path, dataclasses.replace(options or RunnerOptions(), device="gpu"))

    @classmethod
    def check_available(cls) -> None:
        import onnxruntime as ort

        check_cuda_provider(ort, cls.gpu_what)


def mlas_isa(flags: list[str], int8: bool) -> str:
    """The kernel family ONNX Runtime's CPU library (MLAS) dispatches to on a CPU with `flags`: it picks its
    GEMM/convolution kernels from CPUID at start-up and names none of them in its profile."""
    if int8:
        for flag, isa in (("amx_int8", "amx int8"), ("avx512_vnni", "avx512_vnni int8"), ("avx_vnni", "avx_vnni int8")):
            if flag in flags:
                return isa
        return "avx2 int8 (int16 pairs)" if "avx2" in flags else "sse int8"
    return "avx512 f32" if "avx512f" in flags else "avx2 f32" if "avx2" in flags else "sse f32"


def float_islands(model_path) -> dict:
    """What ONNX Runtime really runs for a QDQ model: its optimized graph (QDQ fusions, level extended: no
    CPU-specific layout rewrite) saved and read back. Returns {"ops": op-type counts, "float_between_int8": the float
    ops that read a DequantizeLinear's output and whose result goes to a QuantizeLinear — islands where an INT8 chain
    falls back to float and back, e.g. a HardSigmoid ORT has no integer kernel for — with their types}."""
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fastdet-ortopt-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    quant = ("QuantizeLinear", "DequantizeLinear")
    islands = collections.Counter(
        n.op_type for n in graph.node
        if n.op_type not in quant and not n.op_type.startswith("QLinear") and n.op_type != "QGemm"
        and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)
        and any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, [])))
    return {"ops": dict(collections.Counter(n.op_type for n in graph.node).most_common()),
            "float_between_int8": sum(islands.values()), "float_between_int8_types": dict(islands)}
