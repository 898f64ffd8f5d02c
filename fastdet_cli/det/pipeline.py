"""The detector: the model's own preprocessing → one runner (any backend) → post-processing → boxes in pixels."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from fastdet_cli.det.config import DeployConfig, NmsParams
from fastdet_cli.det.model import ModelSource
from fastdet_cli.det.postprocess import (Detections, decode_pico_heads, from_nms_output, multiclass_nms,
                                         raw_head_strides, rescale)
from fastdet_cli.det.preprocess import ImageInfo, Preprocessor
from fastdet_cli.errors import FastdetError
from fastdet_cli.runtime.base import RunnerOptions
from fastdet_cli.runtime.registry import BackendSpec, create_runner


@dataclass
class StageTimes:
    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0  # decoding and NMS
    nms: float = 0.0  # the NMS part of postprocess


def decode_outputs(outs: list[np.ndarray], info: ImageInfo, deploy: DeployConfig, nms: NmsParams,
                   takes_scale_factor: bool, times: StageTimes | None = None) -> Detections:
    """Recognise the export kind from the outputs and decode to original-image pixels (NMS time is added to
    `times.nms` when given)."""

    def run_nms(boxes, scores):
        t0 = time.perf_counter()
        det = multiclass_nms(boxes, scores, nms)
        if times is not None:
            times.nms += time.perf_counter() - t0
        return det

    if len(outs) in (1, 2) and outs[0].ndim == 2 and outs[0].shape[-1] == 6:
        return from_nms_output(outs[0], outs[1] if len(outs) == 2 else None)
    if len(outs) == 2 and all(o.ndim == 3 for o in outs):
        b, s = (outs[0], outs[1]) if outs[0].shape[-1] == 4 and outs[0].shape[1] == outs[1].shape[2] else (
            outs[1], outs[0])
        det = run_nms(b[0], s[0])
        if not takes_scale_factor:  # the model could not rescale: boxes are in network-input pixels
            det = Detections(rescale(det.boxes, info.scale_factor), det.scores, det.class_ids)
        return det
    n = len(deploy.fpn_stride)
    if n and len(outs) == 2 * n:
        h, w = (int(x) for x in info.im_shape)
        boxes, scores = decode_pico_heads(outs[:n], outs[n:], deploy.fpn_stride, (h, w))
        det = run_nms(boxes, scores)
        return Detections(rescale(det.boxes, info.scale_factor), det.scores, det.class_ids)
    shapes = [o.shape for o in outs]
    raise FastdetError(f"unrecognised model outputs {shapes}: expected NMS output [N,6], boxes+scores, "
                       f"or {2 * n} raw PicoDet head outputs (fpn_stride in the deploy config)")


@dataclass
class Detector:
    """`with detector(model, backend) as det: det(bgr_image)` → Detections."""

    source: ModelSource
    spec: BackendSpec  # the backend, resolved by the caller (api.py)
    options: RunnerOptions = field(default_factory=RunnerOptions)

    @property
    def backend(self) -> str:
        """The backend's name (for records and messages)."""
        return self.spec.name

    def __post_init__(self) -> None:
        spec = self.spec
        if self.source.format != spec.model_format:  # artifacts.detector() hands over the right form
            raise FastdetError(f"backend '{self.backend}' loads {spec.model_format} models; {self.source.path} is "
                               f"{self.source.format}")
        self.deploy = self.source.deploy
        self.preprocess = Preprocessor.of(self.deploy)
        side = self.source.sidecar()
        if side.get("nms"):
            self.nms = NmsParams.from_mapping(side["nms"])
        else:
            self.nms = self.deploy.nms or NmsParams()
        if self.options.min_subgraph_size is None:  # the deploy config's value (Paddle-TensorRT reads it)
            self.options = dataclasses.replace(self.options, min_subgraph_size=self.deploy.min_subgraph_size)
        self.runner = create_runner(spec, self.source.runner_path, self.options)
        self.notes: list[str] = []  # things the user should read once (e.g. derived settings)
        self.times = StageTimes()

    def __enter__(self) -> Detector:
        self.runner.activate()
        self.inputs = self.runner.input_metadata()
        self.outputs = self.runner.output_names()
        return self

    def __exit__(self, *exc) -> None:
        self.runner.__exit__(*exc)

    def feed(self, bgr: np.ndarray) -> tuple[dict[str, np.ndarray], ImageInfo]:
        all_inputs, info = self.preprocess(bgr)
        unknown = [k for k in self.inputs if k not in all_inputs]
        if unknown:
            raise FastdetError(f"the model takes input(s) {unknown} that preprocessing does not produce")
        return {k: all_inputs[k] for k in self.inputs}, info

    def decode(self, outs: list[np.ndarray], info: ImageInfo) -> Detections:
        """Boxes in original-image pixels, clipped to the image (as PaddleDetection's deploy code does)."""
        if not self.deploy.fpn_stride and len(outs) > 2:
            strides = raw_head_strides(outs, info.im_shape)
            if strides:  # a raw-head PicoDet whose deploy config has no fpn_stride: derived once, said once
                self.deploy = dataclasses.replace(self.deploy, fpn_stride=strides)
                self.notes.append(f"{self.deploy.path.name} has no fpn_stride: derived {strides} from the input "
                                  f"size {tuple(int(v) for v in info.im_shape)} and the heads' cell counts")
        det = decode_outputs(outs, info, self.deploy, self.nms, "scale_factor" in self.inputs, self.times)
        h, w = info.orig_shape
        boxes = det.boxes.copy()
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
        return Detections(boxes, det.scores, det.class_ids)

    def graph_nms_score_threshold(self) -> float | None:
        """The score threshold of the NMS inside the model's graph, or None when fastdet runs the NMS on the
        host (NMS cut out of the ONNX graph, or a program without NMS) and can lower it."""
        if self.source.format == "paddle":
            from fastdet_cli.paddle_program import load_program, nms_attributes
            from fastdet_cli.paddle_program import paddle_model_files

            attrs = nms_attributes(load_program(paddle_model_files(self.source.dir)[0]))
            return None if attrs is None else float(attrs.get("score_threshold", 0.0))
        from fastdet_cli.onnx_graph import nms_score_threshold

        return nms_score_threshold(self.source.path)

    def __call__(self, bgr: np.ndarray) -> Detections:
        self.times = StageTimes()
        t0 = time.perf_counter()
        feed, info = self.feed(bgr)
        t1 = time.perf_counter()
        outs = self.runner.infer(feed)
        t2 = time.perf_counter()
        det = self.decode(outs, info)
        t3 = time.perf_counter()
        self.times.preprocess, self.times.infer, self.times.postprocess = t1 - t0, t2 - t1, t3 - t2
        return det
