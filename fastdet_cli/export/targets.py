"""The ONNX flavours fastdet writes, one row each, read by everything that names one: `export_onnx(target=…)`
(`fastdet export --for`), compress's `Global.deploy_backend` (the form engine onnxruntime quantizes into) and
`BackendSpec.onnx_target` (runtime/registry.py: the flavour a backend gets from a Paddle model)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnnxTarget:
    """One ONNX flavour and the INT8 graph made for it."""

    name: str
    backend: str | None  # the fastdet backend its runtime is measured on (None: not on a CPU)
    conv_outputs: bool  # Q/DQ on convolution outputs too (ONNX Runtime fuses only that form into integer kernels)
    symmetric: bool  # int8 activations at zero point 0, float biases (TensorRT)
    from_paddle: bool  # export_onnx writes it from a Paddle program (OpenVINO loads the onnxruntime flavour)
    loads_others: bool = False  # its runtimes also load the other flavours (ORT and OpenVINO load TensorRT's)
    gpu: bool = False  # deployed on a GPU: int8 accumulates in int32 there (full 8-bit weights, machine.py)

    @property
    def backend_spec(self):
        """The backend table's row (BackendSpec) for `backend`; None where its runtime is not measured on a CPU."""
        from fastdet_cli.runtime.registry import BACKENDS

        return BACKENDS[self.backend] if self.backend else None


# ORT: outputs quantized too; OpenVINO: Q/DQ on convolution inputs only (its own form, half the roundings);
# TensorRT: symmetric int8
ONNX_TARGETS: dict[str, OnnxTarget] = {t.name: t for t in (
    OnnxTarget("onnxruntime", "ort", conv_outputs=True, symmetric=False, from_paddle=True, loads_others=True),
    OnnxTarget("openvino", "openvino", conv_outputs=False, symmetric=False, from_paddle=False),
    OnnxTarget("tensorrt", None, conv_outputs=True, symmetric=True, from_paddle=True, gpu=True),
)}
DEFAULT_TARGET = "onnxruntime"  # what export writes without --for, and the flavour with no suffix in the cache
EXPORT_TARGETS = tuple(name for name, t in ONNX_TARGETS.items() if t.from_paddle)  # export_onnx's `target`


def made_by_ort(sidecar: dict | None) -> bool:
    """A model's fastdet.yml (`sidecar`) says compress's onnxruntime engine wrote it: a Q/DQ ONNX model in one of
    the flavours above, made to be deployed as it is (compress/ort_engine.py writes `engine: onnxruntime`)."""
    return (sidecar or {}).get("engine") == "onnxruntime"
