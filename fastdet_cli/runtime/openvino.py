"""OpenVINO backend, reading ONNX. The FP32 mode sets INFERENCE_PRECISION_HINT=f32: on CPUs with
AVX512-BF16/AMX, OpenVINO's default is bf16, which would make an "FP32" baseline silently faster and
less exact. `precision="fp16"` asks for the CPU's reduced-precision hint (bf16 where the CPU has it)."""
from __future__ import annotations

import numpy as np

from fastdet_cli.errors import FastdetError, NoDevice, UnsupportedMode
from fastdet_cli.runtime.base import OpTime, Runner, TensorMeta


class OpenVinoRunner(Runner):
    name = "openvino"

    def _device(self, core) -> str:
        d = self.options.device
        device = "CPU" if d.lower() == "cpu" else ("GPU" if d.lower() == "gpu" else d)
        if device.split(".")[0] not in {x.split(".")[0] for x in core.available_devices}:
            raise NoDevice(f"OpenVINO device '{device}' is not available (available: {', '.join(core.available_devices)})")
        return device

    def precision_hint(self, device: str) -> str | None:
        p = self.options.precision
        if p == "fp16" or (p == "int8" and self.options.fp16):
            if device.startswith("GPU"):
                return "f16"
            from fastdet_cli.machine import BF16_FLAGS, cpu_has

            if p == "int8" and not cpu_has(BF16_FLAGS):
                raise UnsupportedMode("this CPU has no bf16 (OpenVINO's reduced-precision hint)")
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
            raise FastdetError(f"OpenVINO cannot compile {self.model_path} on {device}: {str(e).splitlines()[0]}") from e
        self.request = self.compiled.create_infer_request()
        self.device_name = device

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

    def _deactivate(self) -> None:
        del self.request, self.compiled


def exec_precision(node_type: str, exec_type: str) -> str:
    """OpenVINO CPU's exec_type ends in the precision the kernel ran in (e.g. brgconv_avx2_I8, jit_avx2_FP32)."""
    if node_type in ("FakeQuantize", "Reorder", "Convert"):
        return "q/dq"
    suffix = exec_type.rsplit("_", 1)[-1].upper()
    return "int8" if suffix in ("I8", "U8") else "float" if suffix in ("FP32", "F32", "BF16", "FP16") else "other"
