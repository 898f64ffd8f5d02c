"""OpenVINO backend, reading ONNX. The FP32 mode sets INFERENCE_PRECISION_HINT=f32: on CPUs with
AVX512-BF16/AMX, OpenVINO's default is bf16, which would make an "FP32" baseline silently faster and
less exact; the compiled model is asked back which precision it took, and a hint it did not honour is an error.
`precision="bf16"` (CPU) and INT8 with `fp16` ask for bf16 where the CPU has it in hardware (AVX512-BF16 or
AMX-BF16); `precision="fp16"` asks for the device's reduced precision (f16 on GPU, bf16 on CPU)."""
from __future__ import annotations

import numpy as np

from fastdet_cli.errors import FastdetError, NoDevice, UnsupportedMode
from fastdet_cli.runtime.base import Kernels, OpTime, Runner, TensorMeta


class OpenVinoRunner(Runner):
    name = "openvino"

    def _device(self, core) -> str:
        d = self.options.device
        device = "CPU" if d.lower() == "cpu" else ("GPU" if d.lower() == "gpu" else d)
        if device.split(".")[0] not in {x.split(".")[0] for x in core.available_devices}:
            raise NoDevice(f"OpenVINO device '{device}' is not available "
                           f"(available: {', '.join(core.available_devices)})")
        return device

    def precision_hint(self, device: str) -> str | None:
        p = self.options.precision
        if p == "bf16" or p == "fp16" or (p == "int8" and self.options.fp16):
            if device.startswith("GPU"):
                if p == "bf16":
                    raise UnsupportedMode("OpenVINO's GPU plugin has no bf16 (its reduced precision is f16)")
                return "f16"
            from fastdet_cli.machine import BF16_FLAGS, cpu_has

            if p != "fp16" and not cpu_has(BF16_FLAGS):
                raise UnsupportedMode("this CPU has no bf16 (AVX512-BF16 or AMX-BF16)")
            return "bf16"
        return "f32" if device.startswith("CPU") or p == "fp32" else None

    def _activate(self) -> None:
        import openvino as ov

        core = ov.Core()
        device = self._device(core)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = self.options.threads
            config["NUM_STREAMS"] = 1
        hint = self.precision_hint(device)
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        if self.options.profile:
            config["PERF_COUNT"] = True
        config.update(self.options.openvino_config)
        try:
            model = core.read_model(str(self.model_path))
            self.compiled = core.compile_model(model, device, config)
        except RuntimeError as e:
            raise FastdetError(f"OpenVINO cannot compile {self.model_path} on {device}: "
                               f"{str(e).splitlines()[0]}") from e
        self.request = self.compiled.create_infer_request()
        self.device_name = device
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        wanted = {"f32": ("float32", "f32"), "bf16": ("bfloat16", "bf16"), "f16": ("float16", "f16")}.get(hint)
        if wanted and not any(w in self.inference_precision for w in wanted):
            raise FastdetError(f"OpenVINO did not honour INFERENCE_PRECISION_HINT={hint} on {device} (it runs "
                               f"{self.inference_precision}): the row would not be what it says")

    def _input_metadata(self) -> dict[str, TensorMeta]:
        out = {}
        for port in self.compiled.inputs:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            out[port.get_any_name()] = TensorMeta(np.dtype(port.get_element_type().to_dtype()), shape)
        return out

    def _output_names(self) -> list[str]:
        return [p.get_any_name() for p in self.compiled.outputs]

    def _infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.request.infer(feed)
        return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]

    def _op_profile(self, feed: dict[str, np.ndarray], runs: int) -> list[OpTime]:
        total: dict[str, list] = {}
        for _ in range(runs):
            self.request.infer(feed)
            for info in self.request.get_profiling_info():
                if info.status.name != "EXECUTED":
                    continue
                entry = total.setdefault(info.node_name, [info.node_type, info.exec_type, 0.0])
                entry[2] += info.real_time.total_seconds() * 1000.0
        return [OpTime(name, node_type, exec_precision(node_type, exec_type), ms / runs)
                for name, (node_type, exec_type, ms) in total.items()]

    def _kernels(self, feed: dict[str, np.ndarray]) -> Kernels:
        """From the compiled (executed) graph: each convolution's primitive, e.g. brgconv_avx512_amx_1x1_I8."""
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "layerType" in rt and "Convolution" in rt["layerType"].astype(str) and "primitiveType" in rt:
                isa = kernel_isa(rt["primitiveType"].astype(str))
                counts[isa] = counts.get(isa, 0) + 1
        precision = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
        prec = next((v for k, v in precision.items() if k in self.inference_precision), self.inference_precision)
        return Kernels(dict(sorted(counts.items(), key=lambda kv: -kv[1])), "executed graph", prec)

    def _deactivate(self) -> None:
        del self.request, self.compiled


def exec_precision(node_type: str, exec_type: str) -> str:
    """OpenVINO CPU's exec_type ends in the precision the kernel ran in (e.g. brgconv_avx2_I8, jit_avx2_FP32)."""
    if node_type in ("FakeQuantize", "Reorder", "Convert"):
        return "q/dq"
    suffix = exec_type.rsplit("_", 1)[-1].upper()
    return "int8" if suffix in ("I8", "U8") else "float" if suffix in ("FP32", "F32", "BF16", "FP16") else "other"


def kernel_isa(primitive: str) -> str:
    """The instruction set and number format in an OpenVINO CPU primitive name: brgconv_avx512_amx_1x1_I8 →
    avx512_amx int8, jit_avx2_dw_FP32 → avx2 f32, brgconv_avx512_amx_bf16 → avx512_amx bf16."""
    parts = primitive.split("_")
    fmt = {"i8": "int8", "u8": "int8", "fp32": "f32"}.get(parts[-1].lower(), parts[-1].lower())
    words = [w for w in parts[1:-1] if w not in ("1x1", "dw", "planar", "core")]
    return f"{'_'.join(words) or parts[0]} {fmt}"
