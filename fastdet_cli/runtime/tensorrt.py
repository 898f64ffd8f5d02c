"""TensorRT backend: an engine built from ONNX (FP32 / FP16 / INT8 from explicit Q/DQ), cached on disk, with
host<->device copies inside `infer()` (as the reference's runtime latency counts them) and optional pinned
(page-locked) host buffers.

Written against TensorRT 10's documented Python API (named I/O tensors, `execute_async_v3`) and
cuda-python's `cudart`. It has never run on the machines this project is built on: TensorRT cannot be
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


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise FastdetError(f"CUDA runtime error {err}")
    return rest[0] if len(rest) == 1 else rest


def engine_cache_path(onnx_path: Path, precision: str, shapes: dict, cache_dir: Path) -> Path:
    h = hashlib.sha256(onnx_path.read_bytes())
    h.update(f"{precision}|{sorted(shapes.items())}".encode())
    return cache_dir / f"{onnx_path.stem}.{precision}.{h.hexdigest()[:16]}.engine"


class TrtRunner(Runner):
    name = "trt"

    def _activate(self) -> None:
        from fastdet_cli.runtime.registry import require_gpu

        trt = require("tensorrt", "trt", "backend 'trt'")
        require_gpu("backend 'trt'")
        self.cudart = require("cuda.cudart", "trt", "backend 'trt' (host/device buffers)")
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        shapes = self._static_input_shapes()
        cache_dir = Path(self.options.cache_dir or self.model_path.parent)
        flags = self.options.precision + ("+fp16" if self.options.fp16 else "")
        cache = engine_cache_path(self.model_path, flags, shapes, cache_dir)
        self.engine_path = cache
        if cache.exists():
            blob = cache.read_bytes()
        else:
            from fastdet_cli.io import write_bytes_atomic

            blob = self._build(trt, logger, shapes)
            write_bytes_atomic(cache, blob)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        if self.engine is None:
            raise FastdetError(f"TensorRT could not deserialize the engine {cache}")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        self._names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._in = [n for n in self._names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._out = [n for n in self._names if n not in self._in]
        for name, shape in shapes.items():
            self.context.set_input_shape(name, shape)
        self._buffers, self._pinned = {}, []
        for name in self._names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host = self._host_buffer(shape, dtype, nbytes)
            dev = _check(self.cudart.cudaMalloc(nbytes))
            self.context.set_tensor_address(name, int(dev))
            self._buffers[name] = (host, dev, nbytes)

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
                raise FastdetError(f"trt: input {inp.name!r} has dynamic shape {dims}; give fixed input shapes")
            shapes[inp.name] = shape
        return shapes

    def _build(self, trt, logger, shapes: dict[str, tuple]) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self.model_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise FastdetError(f"TensorRT cannot parse {self.model_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if self.options.precision == "fp16" or self.options.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if self.options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # scales come from the model's explicit Q/DQ nodes
        profile = builder.create_optimization_profile()
        for name, shape in shapes.items():
            profile.set_shape(name, shape, shape, shape)
        config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise FastdetError(f"TensorRT failed to build an engine from {self.model_path}")
        return bytes(blob)

    def _host_buffer(self, shape, dtype, nbytes):
        if not self.options.pinned:
            return np.empty(shape, dtype)
        ptr = _check(self.cudart.cudaMallocHost(nbytes))
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
            _check(cu.cudaMemcpyAsync(dev, host.ctypes.data, nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise FastdetError("TensorRT execution failed")
        for name in self._out:
            host, dev, nbytes = self._buffers[name]
            _check(cu.cudaMemcpyAsync(host.ctypes.data, dev, nbytes, d2h, self.stream))
        _check(cu.cudaStreamSynchronize(self.stream))
        return [self._buffers[n][0].copy() for n in self._out]

    def _deactivate(self) -> None:
        for _, dev, _ in self._buffers.values():
            self.cudart.cudaFree(dev)
        for ptr in self._pinned:
            self.cudart.cudaFreeHost(ptr)
        self.cudart.cudaStreamDestroy(self.stream)
        del self.context, self.engine
