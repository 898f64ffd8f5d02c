"""The GPU code paths that can be checked without a GPU: device detection and its fallbacks, and the TensorRT
runner's device, shape and output-size checks, driven through stand-ins for TensorRT's and CUDA's Python modules
that answer as their documented APIs do (TensorRT 10 `IExecutionContext.set_input_shape` returns a bool;
`get_tensor_shape` gives -1 for a data-dependent size; cuda-python calls return (error, value))."""
import sys
import types

import numpy as np
import pytest

from fastdet_cli.errors import FastdetError


@pytest.fixture
def fresh_count(monkeypatch):
    from fastdet_cli.runtime import registry

    registry.cuda_device_count.cache_clear()
    yield registry
    registry.cuda_device_count.cache_clear()


def _cudart(count_result=(0, 2), calls=None):
    calls = calls if calls is not None else []

    def ok(*args, name=""):
        calls.append((name, args))
        return (0, 1)

    mod = types.SimpleNamespace(
        cudaGetDeviceCount=lambda: count_result,
        cudaSetDevice=lambda i: (calls.append(("cudaSetDevice", (i,))), (0,))[1],
        cudaStreamCreate=lambda: (0, 7), cudaMalloc=lambda n: (0, 4096),
        cudaFree=lambda p: (0,), cudaFreeHost=lambda p: (0,), cudaStreamDestroy=lambda s: (0,))
    return mod, calls


def test_gpu_count_asks_cuda_first_then_falls_back(fresh_count, monkeypatch, tmp_path, stand_in_tool):
    cudart, _ = _cudart((0, 2))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    assert fresh_count.cuda_device_count() == 2
    fresh_count.cuda_device_count.cache_clear()
    # CUDA says "no device" (error 100) on a machine whose /proc hides the driver: nvidia-smi -L decides
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _cudart((100, 0))[0])
    monkeypatch.setattr(fresh_count, "Path", lambda p: tmp_path / "no-proc")
    stand_in_tool("nvidia-smi", "GPU 0: NVIDIA A10 (UUID: GPU-1)\nGPU 1: NVIDIA A10 (UUID: GPU-2)")
    assert fresh_count.cuda_device_count() == 2
    # the fallbacks see the machine's GPUs, the process only those CUDA_VISIBLE_DEVICES leaves it (CUDA's rule:
    # the list up to the first entry that names no device)
    for visible, want in (("", 0), ("-1", 0), ("1", 1), ("0,1", 2), ("0,5,1", 1), ("GPU-2", 1)):
        fresh_count.cuda_device_count.cache_clear()
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert fresh_count.cuda_device_count() == want, visible
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fresh_count.cuda_device_count.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert fresh_count.cuda_device_count() == 0


class _FakeTrt:
    """TensorRT 10's Python API, as much of it as TrtRunner touches once an engine file is cached."""

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    BuilderFlag = types.SimpleNamespace(INT8="INT8", FP16="FP16")
    __version__ = "10.99"

    def __init__(self, accepts_shape=True, out_shape=(100, 6), accepts_address=True):
        self.accepts_shape, self.out_shape, self.accepts_address = accepts_shape, out_shape, accepts_address

    @staticmethod
    def nptype(dtype):
        return np.float32

    def Runtime(self, logger):  # noqa: N802 (TensorRT's name)
        fake = self

        class Context:
            def set_input_shape(self, name, shape):
                return fake.accepts_shape

            def get_tensor_shape(self, name):
                return (1, 3, 8, 8) if name == "image" else fake.out_shape

            def set_tensor_address(self, name, ptr):
                return fake.accepts_address

        class Engine:
            num_io_tensors = 2

            def get_tensor_name(self, i):
                return ("image", "boxes")[i]

            def get_tensor_mode(self, name):
                return "in" if name == "image" else "out"

            def get_tensor_dtype(self, name):
                return "float"

            def create_execution_context(self):
                return Context()

        return types.SimpleNamespace(deserialize_cuda_engine=lambda blob: Engine())


def _activate_with(monkeypatch, tmp_path, fake_trt, gpu_id=0):
    import onnx
    from onnx import TensorProto, helper

    from fastdet_cli.runtime import registry
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.tensorrt import TrtRunner, engine_cache_path

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["boxes"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(model))
    cudart, calls = _cudart()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    monkeypatch.setattr(registry, "cuda_device_count", lambda: 1)
    opts = RunnerOptions(device="gpu", precision="fp32", gpu_id=gpu_id, cache_dir=str(tmp_path))
    from fastdet_cli.machine import nvidia_gpus

    build_id = f"trt{fake_trt.__version__}|{','.join(nvidia_gpus()[0])}|gpu{gpu_id}|[]"
    engine_cache_path(model, "fp32", {"image": (1, 3, 8, 8)}, tmp_path, build_id).write_bytes(b"engine")
    runner = TrtRunner(model, opts)
    runner._activate()
    return runner, calls


def test_trt_runner_uses_the_gpu_asked_for(monkeypatch, tmp_path):
    runner, calls = _activate_with(monkeypatch, tmp_path, _FakeTrt(), gpu_id=1)
    assert ("cudaSetDevice", (1,)) in calls and calls[0] == ("cudaSetDevice", (1,))  # before anything else
    assert runner._buffers["boxes"][2] == 100 * 6 * 4


def test_trt_runner_refuses_a_shape_the_engine_rejects(monkeypatch, tmp_path):
    with pytest.raises(FastdetError, match="refused input shape"):
        _activate_with(monkeypatch, tmp_path, _FakeTrt(accepts_shape=False))


def test_trt_runner_checks_every_tensor_address_it_sets(monkeypatch, tmp_path):
    with pytest.raises(FastdetError, match="TensorRT refused the device buffer for tensor 'image'"):
        _activate_with(monkeypatch, tmp_path, _FakeTrt(accepts_address=False))


def test_trt_runner_refuses_data_dependent_output_sizes(monkeypatch, tmp_path):
    with pytest.raises(FastdetError, match="data-dependent shape .*NMS removed"):
        _activate_with(monkeypatch, tmp_path, _FakeTrt(out_shape=(-1, 6)))


def test_bench_says_cpu_rows_ran_on_the_cpu_when_a_gpu_is_there(monkeypatch):
    """With a GPU said to be there, the CPU rows say they ran on the CPU; the trt row, its library absent, is
    skipped with the reason (a failed row would mean bench broke, not that the machine lacks TensorRT)."""
    from fastdet_cli import api
    from fastdet_cli.bench.run import BenchSettings
    from fastdet_cli.runtime import registry

    monkeypatch.setattr(registry, "cuda_device_count", lambda: 1)
    # the GPU is pretended, so TensorRT, where installed, would try it and fail: it is hidden here on every machine
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    said = []
    report = api.bench(BenchSettings(backends=("ort", "trt"), int8=False, bf16=False, repeat=1, warmup=0,
                                     eval=False, end2end=False), log=said.append).as_dict()
    assert any(line.startswith("ort: measured on the CPU") for line in said)
    rows = {r["backend"]: r for r in report["rows"]}
    assert rows["ort"]["status"] == "ok"
    assert rows["trt"]["status"] == "skipped" and "'tensorrt'" in rows["trt"]["why"], rows["trt"]


# ---- every GPU hidden: skipped, not failed ----------------------------------------------------------------------

def _hidden_gpus(monkeypatch, tmp_path, registry, visible: str) -> None:
    """A machine with two GPUs in /proc whose CUDA runtime says "no device" (error 100) because
    CUDA_VISIBLE_DEVICES=`visible` hides them all, and a stand-in TensorRT module that is "installed"."""
    import importlib.machinery

    gpus = tmp_path / "gpus"
    for k in range(2):
        (gpus / f"0000:0{k}:00.0").mkdir(parents=True)
    monkeypatch.setattr(registry, "Path", lambda p: gpus if p == "/proc/driver/nvidia/gpus" else tmp_path / "none")
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _cudart((100, 0))[0])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)


@pytest.mark.parametrize("visible", ["", "-1"])
def test_every_gpu_hidden_makes_gpu_rows_skipped(fresh_count, monkeypatch, tmp_path, visible):
    from fastdet_cli.errors import NoDevice
    from fastdet_cli.outcome import Outcome

    _hidden_gpus(monkeypatch, tmp_path, fresh_count, visible)
    assert fresh_count.cuda_device_count() == 0
    with pytest.raises(NoDevice) as e:
        fresh_count.BACKENDS["trt"].check_can_run()
    assert Outcome.of(e.value).state == "skipped"
    fresh_count.cuda_device_count.cache_clear()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # the same machine with its GPUs visible: the /proc count stands
    assert fresh_count.cuda_device_count() == 2


def test_bench_with_every_gpu_hidden_skips_the_trt_rows(fresh_count, monkeypatch, tmp_path):
    """The target of issue 32: CUDA_VISIBLE_DEVICES="" bench --backend trt gives skipped trt rows (NoDevice)."""
    from fastdet_cli.bench.run import BenchSettings, run_bench

    _hidden_gpus(monkeypatch, tmp_path, fresh_count, "")
    report = run_bench(BenchSettings(backends=(fresh_count.BACKENDS["trt"],), int8=False, bf16=False, repeat=1,
                                     warmup=0, eval=False, end2end=False), log=lambda line: None)
    rows = report.as_dict()["rows"]
    assert rows and {r["status"] for r in rows} == {"skipped"}, rows
    assert all("needs an NVIDIA GPU" in r["why"] for r in rows)


# ---- ONNX Runtime on the GPU, through a stand-in onnxruntime module -----------------------------------------------

class _FakeOrt(types.ModuleType):
    """onnxruntime's documented Python API as OrtRunner uses it: get_available_providers(), InferenceSession(model,
    sess_options, providers=[…]) whose get_providers() says what really runs, disable_fallback(), preload_dlls()."""

    __version__ = "1.31.1"
    cuda_version = "13.0"

    class SessionOptions:
        def add_session_config_entry(self, key, value):
            pass

    ExecutionMode = types.SimpleNamespace(ORT_SEQUENTIAL=0)
    GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_BASIC=1, ORT_ENABLE_ALL=99)

    def __init__(self, available=("CUDAExecutionProvider", "CPUExecutionProvider"), cuda_starts=True, loader_says=""):
        super().__init__("onnxruntime")
        self.available, self.cuda_starts, self.loader_says = list(available), cuda_starts, loader_says
        self.asked, self.preloaded, self.sessions = None, False, []
        fake = self

        class InferenceSession:
            def __init__(self, model, so, providers):
                fake.asked, self.fallback = providers, True
                names = [p[0] if isinstance(p, tuple) else p for p in providers]
                self.providers = [n for n in names if fake.cuda_starts or n != "CUDAExecutionProvider"]
                fake.sessions.append(self)

            def get_providers(self):
                return list(self.providers)

            def disable_fallback(self):
                self.fallback = False

            def get_inputs(self):
                return [types.SimpleNamespace(name="image", type="tensor(float)", shape=[1, 3, 8, 8])]

            def get_outputs(self):
                return [types.SimpleNamespace(name="boxes")]

            def run(self, names, feed):
                return [feed["image"]]

        self.InferenceSession = InferenceSession

    def get_available_providers(self):
        return list(self.available)

    def preload_dlls(self):
        self.preloaded = True
        if self.loader_says:
            print(self.loader_says)


def _ort_gpu(monkeypatch, fake, gpus=1, gpu_id=0):
    from fastdet_cli.runtime import registry
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.onnxruntime import OrtRunner

    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(registry, "cuda_device_count", lambda: gpus)
    return OrtRunner(b"model", RunnerOptions(device="gpu", gpu_id=gpu_id))


def test_ort_on_gpu_asks_for_cuda_then_cpu_and_records_what_ran(monkeypatch):
    fake = _FakeOrt()
    with _ort_gpu(monkeypatch, fake, gpu_id=1) as runner:
        out = runner.infer({"image": np.ones((1, 3, 8, 8), np.float32)})
        kernels = runner.kernels({"image": np.ones((1, 3, 8, 8), np.float32)})
    assert fake.asked == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert fake.preloaded  # the CUDA/cuDNN wheels' libraries, loaded where ORT can (>= 1.21)
    assert runner.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert kernels.source == "execution providers: CUDAExecutionProvider, CPUExecutionProvider"
    assert not fake.sessions[0].fallback  # a run failing on CUDA raises: never re-run on the CPU unseen
    assert out[0].shape == (1, 3, 8, 8)


def test_ort_on_gpu_without_onnxruntime_gpu_names_the_pip_command(monkeypatch):
    from fastdet_cli.errors import MissingDependency
    from fastdet_cli.outcome import Outcome

    fake = _FakeOrt(available=("AzureExecutionProvider", "CPUExecutionProvider"))
    with pytest.raises(MissingDependency) as e:
        _ort_gpu(monkeypatch, fake).activate()
    msg = str(e.value)
    assert "this onnxruntime 1.31.1 has only AzureExecutionProvider, CPUExecutionProvider" in msg
    assert "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'" in msg
    assert Outcome.of(e.value).state == "skipped" and fake.asked is None  # no session was made


def test_ort_on_gpu_with_no_gpu_visible_is_no_device(monkeypatch):
    from fastdet_cli.errors import NoDevice

    fake = _FakeOrt()
    with pytest.raises(NoDevice, match="backend 'ort' on gpu needs an NVIDIA GPU"):
        _ort_gpu(monkeypatch, fake, gpus=0).activate()
    assert fake.asked is None


def test_ort_cuda_provider_that_does_not_start_is_no_device_with_the_loader_s_words(monkeypatch):
    """ORT puts a session on the CPU when CUDA/cuDNN cannot be loaded and says so only on stdout: a GPU row
    that ran on the CPU would be a lie."""
    from fastdet_cli.errors import NoDevice

    fake = _FakeOrt(cuda_starts=False, loader_says="Failed to load libcudnn.so.9: cannot open shared object file")
    with pytest.raises(NoDevice) as e:
        _ort_gpu(monkeypatch, fake).activate()
    msg = str(e.value)
    assert "could not start its CUDA execution provider (built for CUDA 13.0" in msg
    assert "the session has only CPUExecutionProvider" in msg and "libcudnn.so.9" in msg


def test_ort_on_cpu_records_its_provider(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.onnxruntime import OrtRunner

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["boxes"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3])])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    with OrtRunner(model, RunnerOptions()) as runner:
        assert runner.providers == ("CPUExecutionProvider",)


# ---- the ort-gpu row: ONNX Runtime always on its CUDA provider ----------------------------------------------------

def _ort_gpu_row(monkeypatch, fake, gpus=1):
    """The `ort-gpu` backend row with `fake` as onnxruntime and `gpus` visible GPUs."""
    import importlib.machinery

    from fastdet_cli.runtime import registry

    fake.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", None)  # found by BackendSpec.installed()
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(registry, "cuda_device_count", lambda: gpus)
    return registry.BACKENDS["ort-gpu"]


def test_ort_gpu_row_runs_on_cuda_then_cpu_and_records_the_providers(monkeypatch):
    from fastdet_cli.runtime.base import RunnerOptions
    from fastdet_cli.runtime.registry import create_runner

    fake = _FakeOrt()
    spec = _ort_gpu_row(monkeypatch, fake)
    spec.check_can_run()  # onnxruntime-gpu's provider and a GPU: nothing to say
    assert fake.asked is None  # checked without a session
    runner = create_runner(spec, b"model", RunnerOptions(gpu_id=1))  # "cpu", the default, becomes the GPU
    assert runner.name == "ort-gpu" and runner.options.device == "gpu"
    with runner:
        out = runner.infer({"image": np.ones((1, 3, 8, 8), np.float32)})
        kernels = runner.kernels({"image": np.ones((1, 3, 8, 8), np.float32)})
    assert fake.asked == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"] and fake.preloaded
    assert runner.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert kernels.source == "execution providers: CUDAExecutionProvider, CPUExecutionProvider"
    assert not fake.sessions[0].fallback and out[0].shape == (1, 3, 8, 8)
    assert runner.float_islands() is None  # the CPU provider's optimized graph says nothing of a GPU session
    from fastdet_cli.runtime.onnxruntime import OrtGpuRunner

    assert OrtGpuRunner(b"model").options.device == "gpu"  # on the GPU even when built directly


def test_ort_gpu_row_without_onnxruntime_gpu_is_skipped_naming_the_pip_command(monkeypatch):
    from fastdet_cli.errors import MissingDependency
    from fastdet_cli.outcome import Outcome

    fake = _FakeOrt(available=("AzureExecutionProvider", "CPUExecutionProvider"))
    spec = _ort_gpu_row(monkeypatch, fake, gpus=0)  # the missing wheel is said first, before the missing GPU
    with pytest.raises(MissingDependency) as e:
        spec.check_can_run()
    msg = str(e.value)
    assert msg.startswith("backend 'ort-gpu' (this onnxruntime 1.31.1 has only AzureExecutionProvider, "
                          "CPUExecutionProvider) needs the Python package 'onnxruntime-gpu'")
    assert "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'" in msg
    assert Outcome.of(e.value).state == "skipped" and fake.asked is None and not fake.preloaded


@pytest.mark.parametrize("visible", ["", "-1"])
def test_ort_gpu_row_with_every_gpu_hidden_is_no_device(fresh_count, monkeypatch, tmp_path, visible):
    """onnxruntime-gpu installed, the machine's GPUs all hidden by CUDA_VISIBLE_DEVICES: NoDevice, before any
    session."""
    import importlib.machinery

    from fastdet_cli.errors import NoDevice
    from fastdet_cli.outcome import Outcome

    _hidden_gpus(monkeypatch, tmp_path, fresh_count, visible)
    fake = _FakeOrt()
    fake.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    with pytest.raises(NoDevice, match=r"^backend 'ort-gpu' needs an NVIDIA GPU, and none is visible") as e:
        fresh_count.BACKENDS["ort-gpu"].check_can_run()
    assert Outcome.of(e.value).state == "skipped" and fake.asked is None


def test_bench_ort_gpu_with_every_gpu_hidden_gives_skipped_rows(fresh_count, monkeypatch, tmp_path):
    """bench's ort-gpu rows on a machine whose GPUs are hidden: skipped with the reason (whichever ONNX Runtime is
    installed: the CPU wheel lacks the CUDA provider, the GPU wheel finds no GPU), never failed."""
    from fastdet_cli.bench.run import BenchSettings, run_bench

    _hidden_gpus(monkeypatch, tmp_path, fresh_count, "")
    report = run_bench(BenchSettings(backends=(fresh_count.BACKENDS["ort-gpu"], fresh_count.BACKENDS["ort"]),
                                     int8=False, bf16=False, repeat=1, warmup=0, eval=False, end2end=False),
                       log=lambda line: None)
    rows = {(r["backend"], r["precision"]): r for r in report.as_dict()["rows"]}
    gpu_row = rows[("ort-gpu", "fp32")]
    assert gpu_row["status"] == "skipped", rows
    assert "onnxruntime-gpu" in gpu_row["why"] or "needs an NVIDIA GPU" in gpu_row["why"], gpu_row
    assert rows[("ort", "fp32")]["status"] == "ok"  # the CPU rows run beside it


def test_env_says_what_the_ort_gpu_row_lacks(monkeypatch):
    """`fastdet env`'s status is check_can_run's word: the CPU wheel installed is not "ready" for ort-gpu, even
    with a GPU."""
    from fastdet_cli.environment import environment

    _ort_gpu_row(monkeypatch, _FakeOrt(available=("CPUExecutionProvider",)), gpus=1)
    status = {b.spec.name: b.status for b in environment().backends}
    assert status["ort-gpu"] == "installed, needs onnxruntime-gpu" and status["ort"] == "ready"
    _ort_gpu_row(monkeypatch, _FakeOrt(), gpus=1)
    assert {b.spec.name: b.status for b in environment().backends}["ort-gpu"] == "ready"
    _ort_gpu_row(monkeypatch, _FakeOrt(), gpus=0)
    assert {b.spec.name: b.status for b in environment().backends}["ort-gpu"] == "installed, no GPU"
