"""Post-training quantization with PaddleSlim's `quant_post_static` (calibration on the user's images,
preprocessed by the model's own deploy config)."""
from __future__ import annotations

from pathlib import Path

from fastdet_cli.compress.samples import FeedSamples
from fastdet_cli.compress.config import CompressConfig
from fastdet_cli.det.model import ModelSource


def run_ptq(cfg: CompressConfig, source: ModelSource, samples: FeedSamples, out_dir: Path,
            skip_tensors: list[str]) -> dict:
    """Quantize `source` into `out_dir` (model.pdmodel / model.pdiparams with quantize_linear ops)."""
    import paddle

    from fastdet_cli.paddle_program import paddle_model_files

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


def search_dataset_spec(cfg: CompressConfig) -> tuple[str, str]:
    """(dataset spec, why) for the sensitivity search: `PTQ.search_dataset`, else the calibration images when
    they are annotated (the generated calib split for `default`), else the eval dataset, else the calibration
    images labelled by the FP32 model (agreement mAP). Image folders without annotations are labelled by the FP32
    model wherever they appear."""
    if cfg.ptq.get("search_dataset"):
        return cfg.ptq["search_dataset"], "PTQ.search_dataset"
    if cfg.calib_images == "default":
        return "default:calib", "the generated calibration split"
    if (Path(cfg.calib_images) / "annotations").is_dir():
        return cfg.calib_images, "the annotated calibration images"
    if cfg.eval_dataset:
        return cfg.eval_dataset, "Global.eval_dataset (the mAP printed afterwards is then not held out)"
    return cfg.calib_images, ("the calibration images, labelled by the FP32 model (no annotations anywhere: "
                              "agreement mAP, budget = 1.0 − agreement)")


def run_ptq_with_search(cfg: CompressConfig, source: ModelSource, samples: FeedSamples, out_dir: Path,
                        skip_tensors: list[str], log=print) -> tuple[dict, dict | None]:
    """PTQ; with `PTQ.max_map_drop` set, the INT8 mAP is measured and, if it dropped more than that, the
    convolutions whose quantization costs most are kept in float (compress/sensitivity.py) and PTQ is run
    again with them skipped. Returns (settings, search report or None)."""
    if cfg.ptq.get("max_map_drop") is None:
        return run_ptq(cfg, source, samples, out_dir, skip_tensors), None
    import shutil
    import time

    from fastdet_cli.compress.search import search_float_layers
    from fastdet_cli.compress.sensitivity import ranking_feeds
    from fastdet_cli.agreement import labelled
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.artifacts import onnx_for
    from fastdet_cli.export.onnx import export_onnx
    from fastdet_cli.runtime.registry import BACKENDS

    spec, why = search_dataset_spec(cfg)
    fp32 = onnx_for(source)
    dataset = labelled(spec, fp32, BACKENDS["ort"])  # an image folder: agreement with the FP32 model (before PTQ runs)
    settings = run_ptq(cfg, source, samples, out_dir, skip_tensors)
    t0 = time.perf_counter()
    log(f"sensitivity search on {spec} ({why})")
    work = out_dir.with_name(out_dir.name + "-search")
    try:
        shutil.copyfile(source.deploy.path, out_dir / source.deploy.path.name)
        export_onnx(resolve_model(out_dir), work / "int8", int8=True, validate=False)
        feeds = ranking_feeds(samples)
        # runtime not measured: ONNX Runtime runs PaddleSlim's export in float, and the program is made for Paddle
        # Inference and OpenVINO
        result = search_float_layers(fp32, work / "int8", work / "variant", dataset, feeds,
                                     float(cfg.ptq["max_map_drop"]) / 100, cfg.ptq.get("max_float_layers"), log,
                                     runtime_backend=None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result.chosen:
        chosen = [s.weight for s in result.chosen if s.weight]
        log(f"PTQ again with {len(chosen)} more convolution(s) in float: {', '.join(chosen)}")
        for f in out_dir.iterdir():
            f.unlink() if f.is_file() else shutil.rmtree(f)
        settings = run_ptq(cfg, source, samples, out_dir, skip_tensors + chosen)
    report = {**result.as_dict(), "reason": why, "max_map_drop_points": cfg.ptq["max_map_drop"],
              "seconds": round(time.perf_counter() - t0, 1)}
    return settings, report
