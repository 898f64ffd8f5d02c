"""TensorRT backend: an engine built from ONNX (FP32 / FP16 / INT8 from explicit Q/DQ), cached on disk, with
host<->device copies inside `infer()` (as the reference's runtime latency counts them) and optional pinned
(page-locked) host buffers.

Written against TensorRT 10's documented Python API (named I/O tensors, `execute_async_v3`; the `trt` extra pins
tensorrt>=10,<11, and TensorRT 11's strongly typed networks are handled: precision_setup) and cuda-python's
runtime API (`cuda.bindings.runtime`, or `cuda.cudart` before cuda-bindings 12.6).
It has never run on the machines this project is built on: TensorRT cannot be
installed there and there is no GPU. It fails with a clear message instead.
"""
from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import numpy as np

from fastdet_cli.errors import FastdetError
from fastdet_cli.lazy import require
from fastdet_cli.runtime.base import Runner, TensorMeta


def cuda_runtime():
    """CUDA's runtime API from cuda-python: `cuda.bindings.runtime` (cuda-bindings ≥ 12.6; the only place in 13.x)
    or the older `cuda.cudart`."""
    import importlib

    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    from fastdet_cli.errors import MissingDependency

    raise MissingDependency("cuda.bindings.runtime", "trt", "backend 'trt' (host/device buffers)")


def _check(result, cudart=None):
    """The value of a cuda-python call that returns (error, value…); a CUDA error becomes a FastdetError with
    CUDA's own error name and text."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        text = ""
        if cudart is not None:
            try:
                _, name = cudart.cudaGetErrorName(err)
                _, desc = cudart.cudaGetErrorString(err)
                text = f" {name.decode() if isinstance(name, bytes) else name}: " \
                       f"{desc.decode() if isinstance(desc, bytes) else desc}"
            except Exception:  # the error text is a courtesy; never hide the error itself
                pass
        raise FastdetError(f"CUDA runtime error {int(err)}{text}")
    return rest[0] if len(rest) == 1 else rest


def engine_cache_path(onnx_path: Path, precision: str, shapes: dict, cache_dir: Path, build_id: str = "") -> Path:
    """The cache file of an engine: keyed by the ONNX bytes, precision flags, input shapes and `build_id` (the
    TensorRT version and GPU name: an engine from another TensorRT or GPU cannot be deserialized)."""
    h = hashlib.sha256(onnx_path.read_bytes())
    h.update(f"{precision}|{sorted(shapes.items())}|{build_id}".encode())
    return cache_dir / f"{onnx_path.stem}.{precision}.{h.hexdigest()[:16]}.engine"


def precision_setup(trt, precision: str, fp16: bool) -> tuple[int, list]:
    """(network creation flags, builder flags) for a precision. TensorRT 10 (the `trt` extra pins >=10,<11):
    weakly typed network with the INT8 flag (scales from the model's explicit Q/DQ) and the FP16 flag. Where the
    builder flags are gone (TensorRT 11 builds strongly typed networks only): a strongly typed network — INT8 still
    comes from the Q/DQ pairs, but FP16 would need an FP16 model, so it is refused (UnsupportedMode)."""
    from fastdet_cli.errors import UnsupportedMode

    want_fp16 = precision == "fp16" or fp16
    if hasattr(trt.BuilderFlag, "INT8") and hasattr(trt.BuilderFlag, "FP16"):
        flags = [trt.BuilderFlag.FP16] if want_fp16 else []
        if precision == "int8":
            flags.append(trt.BuilderFlag.INT8)
        return 0, flags
    if want_fp16:
        raise UnsupportedMode(f"TensorRT {trt.__version__} builds strongly typed networks only: FP16 needs an FP16 "
                              "ONNX model (fastdet pins tensorrt<11 in its trt extra)")
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), []


class TrtRunner(Runner):
    name = "trt"

    def _activate(self) -> None:
        from fastdet_cli.runtime.registry import require_gpu

        trt = require("tensorrt", "trt", "backend 'trt'")
        require_gpu("backend 'trt'")
        self.cudart = cuda_runtime()
        self._cu(self.cudart.cudaSetDevice(self.options.gpu_id))  # before any stream, buffer or engine
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        shapes = self._static_input_shapes()
        cache_dir = Path(self.options.cache_dir or self.model_path.parent)
        flags = self.options.precision + ("+fp16" if self.options.fp16 else "")
        self._network_flags, self._builder_flags = precision_setup(trt, self.options.precision, self.options.fp16)
        from fastdet_cli.machine import nvidia_gpus

        build_id = (f"trt{trt.__version__}|{','.join(nvidia_gpus()[0])}|gpu{self.options.gpu_id}|"
                    f"{sorted(self.options.shape_ranges.items())}")  # the shape ranges shape the engine too
        cache = engine_cache_path(self.model_path, flags, shapes, cache_dir, build_id)
        self.engine_path = cache
        from fastdet_cli.outputs import write_bytes_atomic

        if cache.exists():
            blob = cache.read_bytes()
        else:
            blob = self._build(trt, logger, shapes)
            write_bytes_atomic(cache, blob)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        if self.engine is None and cache.exists():  # a stale or damaged cache file: rebuild once
            blob = self._build(trt, logger, shapes)
            write_bytes_atomic(cache, blob)
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        if self.engine is None:
            raise FastdetError(f"TensorRT could not deserialize the engine {cache}")
        self.context = self.engine.create_execution_context()
        self.stream = self._cu(self.cudart.cudaStreamCreate())
        self._names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._in = [n for n in self._names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._out = [n for n in self._names if n not in self._in]
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise FastdetError(f"TensorRT refused input shape {shape} for {name!r} (outside the engine's "
                                   "optimization profile)")
        self._buffers, self._pinned = {}, []
        for name in self._names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # e.g. NMS in the graph: its output size depends on the data
                raise FastdetError(f"TensorRT tensor {name!r} has a data-dependent shape {shape}: fastdet's TensorRT "
                                   "runner needs fixed output sizes (export the model with NMS removed: fastdet "
                                   "export does, and runs NMS on the host)")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host = self._host_buffer(shape, dtype, nbytes)
            dev = self._cu(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (host, dev, nbytes)  # freed on exit, also when the address is refused below
            if not self.context.set_tensor_address(name, int(dev)):  # TensorRT 10 says False, it does not raise
                raise FastdetError(f"TensorRT refused the device buffer for tensor {name!r} ({nbytes} bytes at "
                                   f"{int(dev):#x}): misaligned or of the wrong size for its shape {tuple(shape)}")

    def _cu(self, result):
        return _check(result, self.cudart)

    def _static_input_shapes(self) -> dict[str, tuple]:
        onnx = require("onnx", "base", "backend 'trt'")
        model = onnx.load(str(self.model_path), load_external_data=False)
        init = {i.name for i in model.graph.initializer}
        given = self.options.input_shapes
        shapes = {}
        for inp in model.graph.input:
            if inp.name in init:
                continue
            dims = tuple(d.dim_value if d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim)
            shape = tuple(given.get(inp.name, dims))
            if any(d is None for d in shape):
                raise FastdetError(f"trt: input {inp.name!r} has dynamic shape {dims} and no fixed shape was given "
                                   "(fastdet takes them from the deploy config's preprocessing)")
            shapes[inp.name] = shape
        return shapes

    def _build(self, trt, logger, shapes: dict[str, tuple]) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(self._network_flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self.model_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise FastdetError(f"TensorRT cannot parse {self.model_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        for flag in self._builder_flags:  # INT8 scales come from the model's explicit Q/DQ nodes
            config.set_flag(flag)
        profile = builder.create_optimization_profile()
        for name, shape in shapes.items():
            low, high = self.options.shape_ranges.get(name, (shape, shape))
            profile.set_shape(name, tuple(low), shape, tuple(high))
        config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise FastdetError(f"TensorRT failed to build an engine from {self.model_path}")
        return bytes(blob)

    def _host_buffer(self, shape, dtype, nbytes):
        if not self.options.pinned:
            return np.empty(shape, dtype)
        ptr = self._cu(self.cudart.cudaMallocHost(nbytes))
        buf = (ctypes.c_byte * nbytes).from_address(int(ptr))
        self._pinned.append(int(ptr))
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def _input_metadata(self) -> dict[str, TensorMeta]:
        return {n: TensorMeta(self._buffers[n][0].dtype, self._buffers[n][0].shape) for n in self._in}

    def _output_names(self) -> list[str]:
        return list(self._out)

    def _infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        cu = self.cudart
        h2d, d2h = cu.cudaMemcpyKind.cudaMemcpyHostToDevice, cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._in:
            host, dev, nbytes = self._buffers[name]
            np.copyto(host, feed[name])
            self._cu(cu.cudaMemcpyAsync(dev, host.ctypes.data, nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise FastdetError("TensorRT execution failed")
        for name in self._out:
            host, dev, nbytes = self._buffers[name]
            self._cu(cu.cudaMemcpyAsync(host.ctypes.data, dev, nbytes, d2h, self.stream))
        self._cu(cu.cudaStreamSynchronize(self.stream))
        return [self._buffers[n][0].copy() for n in self._out]

    def _deactivate(self) -> None:
        for _, dev, _ in self._buffers.values():
            self.cudart.cudaFree(dev)
        for ptr in self._pinned:
            self.cudart.cudaFreeHost(ptr)
        self.cudart.cudaStreamDestroy(self.stream)
        del self.context, self.engine
