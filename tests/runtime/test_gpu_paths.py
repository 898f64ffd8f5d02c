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


def test_gpu_count_asks_cuda_first_then_falls_back(fresh_count, monkeypatch, tmp_path):
    cudart, _ = _cudart((0, 2))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    assert fresh_count.cuda_device_count() == 2
    fresh_count.cuda_device_count.cache_clear()
    # CUDA says "no device" (error 100) on a machine whose /proc hides the driver: nvidia-smi -L decides
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _cudart((100, 0))[0])
    monkeypatch.setattr(fresh_count, "Path", lambda p: tmp_path / "no-proc")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A10 (UUID: GPU-1)'\necho 'GPU 1: NVIDIA A10 (UUID: GPU-2)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(smi.parent))
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
    from fastdet_cli.bench.run import BenchSettings, run_bench
    from fastdet_cli.runtime import registry

    monkeypatch.setattr(registry, "cuda_device_count", lambda: 1)
    # the GPU is pretended, so TensorRT, where installed, would try it and fail: it is hidden here on every machine
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    said = []
    report = run_bench(BenchSettings(backends=("ort", "trt"), int8=False, bf16=False, repeat=1, warmup=0,
                                     eval=False, end2end=False), log=said.append)
    assert any(line.startswith("ort: measured on the CPU") for line in said)
    rows = {r["backend"]: r for r in report["rows"]}
    assert rows["ort"]["status"] == "ok"
    assert rows["trt"]["status"] == "skipped" and "'tensorrt'" in rows["trt"]["why"], rows["trt"]
