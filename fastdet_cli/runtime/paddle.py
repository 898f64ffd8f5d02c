"""Paddle Inference backends: `paddle` (CPU with oneDNN on/off, or GPU) and `paddle-trt` (GPU, with Paddle's
TensorRT subgraph engine; min_subgraph_size comes from the deploy config)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from fastdet_cli.errors import FastdetError, NoDevice, UnsupportedMode
from fastdet_cli.outputs import library_output_to
from fastdet_cli.lazy import import_paddle
from fastdet_cli.paddle_program import check_paddle_model, deleted_passes, load_program, op_counts, paddle_model_files
from fastdet_cli.runtime.base import Kernels, Runner, TensorMeta


BF16_OPS = {"conv2d", "depthwise_conv2d", "fused_conv2d"}
ONEDNN_REFERENCE_ONLY = ("softmax", "reduce_mean")  # run by Paddle's own kernels (see PaddleRunner._config)
INT8_OP_SETS = {"conv": {"conv2d"}, "all": set()}  # set() = Paddle's own default: every op it can quantize


def int8_op_set(model_dir: Path, choice: str | None) -> set[str]:
    """The ops Paddle Inference runs in oneDNN INT8: `choice` ('conv' or 'all'), else what `fastdet compress`
    measured for this program (compress_report.json → paddle_int8_ops), else 'conv', the set that kept mAP on
    every program tried ('all' is faster on PP-YOLOE-l, 1.59× FP32 vs ≈1.0×, but gave mAP 0.027 on the PicoDet)."""
    import json

    if choice is None:
        report = Path(model_dir) / "compress_report.json"
        if report.is_file():
            choice = json.loads(report.read_text()).get("paddle_int8_ops")
    choice = choice or "conv"
    if choice not in INT8_OP_SETS:
        raise FastdetError(f"unknown Paddle INT8 op set '{choice}' (choose {' or '.join(INT8_OP_SETS)})")
    return INT8_OP_SETS[choice]


class PaddleRunner(Runner):
    name = "paddle"

    def _config(self):
        import paddle.inference as pi

        model, params = paddle_model_files(self.model_path)
        check_paddle_model(model, params)  # Paddle crashes (or segfaults) on broken files
        config = pi.Config(str(model), str(params))
        o = self.options
        if o.device == "gpu":
            from fastdet_cli.runtime.registry import require_gpu

            require_gpu(f"backend '{self.name}'")
            config.enable_use_gpu(256, o.gpu_id)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(o.threads)
            if o.precision == "bf16" and not o.mkldnn:
                raise UnsupportedMode("Paddle Inference runs BF16 through oneDNN only (mkldnn off)")
            if o.mkldnn:
                config.enable_mkldnn()
                # oneDNN 3.2 (Paddle 2.6.2) has only its reference kernel ("ref:any") for these two in the layouts
                # Paddle gives them: PP-YOLOE-l's 4 ESE reduce_means took 127 ms and its DFL softmax 67 ms of a
                # 476 ms INT8 run (ONEDNN_VERBOSE). Paddle's own CPU kernels compute the same: 442 → 265 ms INT8,
                # 989 → 841 ms FP32 (docs/performance.md)
                types = set(op_counts(load_program(model)))
                config.set_mkldnn_op(types - set(ONEDNN_REFERENCE_ONLY))
                if o.precision == "bf16":
                    from fastdet_cli.machine import BF16_FLAGS, cpu_has

                    if not cpu_has(BF16_FLAGS):  # Paddle would emulate it, slower than FP32
                        raise UnsupportedMode("this CPU has no bf16 (AVX512-BF16 or AMX-BF16)")
                    config.enable_mkldnn_bfloat16()
                    # convolutions only: with Paddle's default bf16 op list, reshape2 breaks on the detectors' box
                    # rescaling ("The input tensor X's size must be divisible by known capacity", PicoDet, 2.6.2)
                    config.set_bfloat16_op(BF16_OPS)
                if o.precision == "int8" and o.mkldnn_int8:
                    # oneDNN INT8 kernels for a quantized program (else its quantize/dequantize ops run in
                    # float: 5× slower than FP32), without cpu_quantize_squash_pass, which aborts on this
                    # project's PicoDet ("The operator after requantize should have input scale(0) equal to
                    # requantize output scale") in Paddle 2.6.2. Which ops run in INT8: see int8_op_set.
                    ops = int8_op_set(self.model_path, o.mkldnn_int8_ops)
                    config.enable_mkldnn_int8(ops) if ops else config.enable_mkldnn_int8()
                    config.delete_pass("cpu_quantize_squash_pass")
            else:
                config.disable_mkldnn()
        for name in deleted_passes(self.model_path):  # measured to break this program (its fastdet.yml says)
            config.delete_pass(name)
        config.switch_ir_optim(True)
        config.enable_memory_optim()
        config.disable_glog_info()
        config.switch_use_feed_fetch_ops(False)
        return config

    def _activate(self) -> None:
        import_paddle()
        import paddle.inference as pi

        config = self._config()
        try:
            with library_output_to(Path(os.devnull)):  # the oneDNN INT8 passes print dozens of C++ lines
                self.predictor = pi.create_predictor(config)
        except (RuntimeError, ValueError, OSError, SystemError) as e:
            found = re.search(r"threshold information for \[([^\]]+)\]", str(e))
            if found:
                # Paddle 2.6.2 takes a float conv weight whose values are all integers in int8 range for an
                # already-quantized one (IsInt8Weight) and then finds no scale for it: PP-YOLOE's DFL projection
                # conv (weights 0..reg_max), which compression keeps float
                raise UnsupportedMode(
                    f"Paddle Inference's oneDNN INT8 passes cannot take {self.model_path.name}: {found.group(1)} is a "
                    "float convolution whose weights are all small integers, which Paddle 2.6.2 mistakes for an int8 "
                    "weight without scales") from e
            raise FastdetError(f"Paddle Inference cannot load {self.model_path}: "
                               f"{str(e).strip().splitlines()[-1]}") from e
        self._in_names = self.predictor.get_input_names()
        self._out_names = self.predictor.get_output_names()

    def _input_metadata(self) -> dict[str, TensorMeta]:
        # the predictor's handles report [-1] before the first reshape: read the shapes from the program

        prog = load_program(paddle_model_files(self.model_path)[0])
        dtypes = {5: np.float32, 6: np.float64, 3: np.int64, 2: np.int32, 4: np.float16, 20: np.uint8, 21: np.int8}
        out = {}
        for var in prog.blocks[0].vars:
            if var.name in self._in_names:
                t = var.type.lod_tensor.tensor
                shape = tuple(d if d > 0 else None for d in t.dims)
                out[var.name] = TensorMeta(np.dtype(dtypes.get(t.data_type, np.float32)), shape)
        return {n: out.get(n, TensorMeta(np.dtype(np.float32), (None,))) for n in self._in_names}

    def _output_names(self) -> list[str]:
        return list(self._out_names)

    def _infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, arr in feed.items():
            h = self.predictor.get_input_handle(name)
            h.reshape(arr.shape)
            h.copy_from_cpu(np.ascontiguousarray(arr))
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self._out_names]

    def _kernels(self, feed: dict[str, np.ndarray]) -> Kernels | None:
        """oneDNN's own account of the convolutions it ran (verbose mode, in a child process)."""
        if self.options.device == "gpu" or not self.options.mkldnn:
            return None
        from fastdet_cli.runtime.onednn_probe import probe

        o = self.options
        counts = probe(self.model_path, {"threads": o.threads, "precision": o.precision, "mkldnn": o.mkldnn,
                                         "mkldnn_int8": o.mkldnn_int8, "mkldnn_int8_ops": o.mkldnn_int8_ops}, feed)
        return Kernels(counts, "oneDNN verbose") if counts else None

    def _deactivate(self) -> None:
        del self.predictor


class PaddleTrtRunner(PaddleRunner):
    """Paddle Inference + TensorRT subgraphs. Written against Paddle's documented API; never run here
    (no GPU, no TensorRT on the machines this project was built on)."""

    name = "paddle-trt"

    def _config(self):
        import paddle
        import paddle.inference as pi

        # the CPU wheel's enable_use_gpu only logs and enable_tensorrt_engine returns: paddle-trt would silently
        # run on the CPU and be reported as paddle-trt
        if not paddle.is_compiled_with_cuda():
            raise NoDevice(f"backend 'paddle-trt' needs Paddle's GPU build (paddlepaddle-gpu) with TensorRT; this is "
                           f"paddlepaddle {paddle.__version__}, the CPU build")
        if tuple(pi.get_trt_compile_version()) == (0, 0, 0):
            raise NoDevice(f"backend 'paddle-trt': this paddlepaddle {paddle.__version__} was built without TensorRT")
        if self.options.device != "gpu":
            raise FastdetError("backend 'paddle-trt' runs on gpu only (pass --device gpu)")
        config = super()._config()
        precision = {"fp32": pi.PrecisionType.Float32, "fp16": pi.PrecisionType.Half,
                     "int8": pi.PrecisionType.Int8}[self.options.precision]
        config.enable_tensorrt_engine(
            workspace_size=1 << 30, max_batch_size=1,
            min_subgraph_size=3 if self.options.min_subgraph_size is None else self.options.min_subgraph_size,
            precision_mode=precision, use_static=bool(self.options.cache_dir), use_calib_mode=False)
        if self.options.cache_dir:
            config.set_optim_cache_dir(str(self.options.cache_dir))
        return config


def _probe_child() -> None:
    """One inference with the options and input the parent wrote (runtime/onednn_probe.py runs this with
    ONEDNN_VERBOSE=1 and reads oneDNN's lines from stdout)."""
    import json
    import sys

    from fastdet_cli.runtime.base import RunnerOptions

    feed = dict(np.load(sys.argv[3]))
    with PaddleRunner(Path(sys.argv[1]), RunnerOptions(**json.loads(sys.argv[2]))) as runner:
        runner.infer(feed)


if __name__ == "__main__":
    _probe_child()
