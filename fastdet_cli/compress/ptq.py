"""Post-training quantization with PaddleSlim's `quant_post_static` (calibration on the user's images,
preprocessed by the model's own deploy config)."""
from __future__ import annotations

from pathlib import Path

from fastdet_cli.compress.common import FeedSamples
from fastdet_cli.compress.config import CompressConfig
from fastdet_cli.det.model import ModelSource


def run_ptq(cfg: CompressConfig, source: ModelSource, samples: FeedSamples, out_dir: Path,
            skip_tensors: list[str]) -> dict:
    """Quantize `source` into `out_dir` (model.pdmodel / model.pdiparams with quantize_linear ops)."""
    import paddle

    from fastdet_cli.runtime.paddle import paddle_model_files

    pdmodel, pdiparams = paddle_model_files(source.dir)
    ptq = cfg.ptq
    batch_size = int(ptq.get("batch_size", 8))
    batch_nums = int(ptq.get("batch_nums", max(1, len(samples) // batch_size)))
    if len(samples) < batch_size * batch_nums:
        batch_nums = max(1, len(samples) // batch_size)

    class _Dataset(paddle.io.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            return samples[i]

    paddle.enable_static()
    try:
        loader = paddle.io.DataLoader(_Dataset(), batch_size=batch_size, shuffle=False, drop_last=True,
                                      return_list=True, places=paddle.CPUPlace())
        exe = paddle.static.Executor(paddle.CPUPlace())
        from paddleslim.quant import quant_post_static

        settings = dict(batch_size=batch_size, batch_nums=batch_nums, algo=ptq.get("calibration_method", "avg"),
                        hist_percent=float(ptq.get("hist_percent", 0.999)),
                        quantizable_op_type=list(ptq.get("quantize_op_types", ["conv2d", "depthwise_conv2d"])),
                        is_full_quantize=bool(ptq.get("is_full_quantize", False)), onnx_format=True,
                        optimize_model=bool(ptq.get("optimize_model", True)),
                        skip_tensor_list=sorted(set(ptq.get("skip_tensor_list", [])) | set(skip_tensors)) or None)
        quant_post_static(executor=exe, model_dir=str(source.dir), quantize_model_path=str(out_dir),
                          data_loader=loader, model_filename=pdmodel.name, params_filename=pdiparams.name,
                          save_model_filename="model.pdmodel", save_params_filename="model.pdiparams", **settings)
    finally:
        paddle.disable_static()
    settings["images_used"] = batch_size * batch_nums
    return settings
