"""ONNX Runtime backend: CPU (intra-op threads fixed, default 1) or the CUDA execution provider."""
from __future__ import annotations

import numpy as np

from fastdet_cli.errors import FastdetError, NoDevice
from fastdet_cli.runtime.base import Runner, TensorMeta

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


class OrtRunner(Runner):
    name = "ort"

    def _activate(self) -> None:
        import onnxruntime as ort

        o = self.options
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: ORT warns about every unused initializer paddle2onnx leaves
        so.intra_op_num_threads = o.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for key, value in o.extra.get("ort_session_config", {}).items():
            so.add_session_config_entry(key, str(value))
        if o.device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise NoDevice("backend 'ort' on gpu needs onnxruntime-gpu with the CUDA execution provider; "
                               f"this onnxruntime has only {ort.get_available_providers()}")
            providers = ["CUDAExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.model_path), so, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable/invalid models
            raise FastdetError(f"ONNX Runtime cannot load {self.model_path}: {str(e).splitlines()[0]}") from e
        self._outputs = [x.name for x in self.session.get_outputs()]

    def _input_metadata(self) -> dict[str, TensorMeta]:
        return {i.name: TensorMeta(np.dtype(_ORT_TYPES.get(i.type, np.float32)), tuple(i.shape))
                for i in self.session.get_inputs()}

    def _output_names(self) -> list[str]:
        return list(self._outputs)

    def _infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self._outputs, feed)

    def _deactivate(self) -> None:
        del self.session
