"""What `prepare` resolves and checks before any minute of work: the method the engine does, the model the config
names (an ONNX model converted to a Paddle program for engine paddleslim), its feeds and convolutions against the
config's skip lists, and the calibration/training images (each rank's share in a distributed run)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastdet_cli.errors import FastdetError

if TYPE_CHECKING:
    from fastdet_cli import distributed
    from fastdet_cli.compress.config import CompressConfig
    from fastdet_cli.compress.job import Engine
    from fastdet_cli.det.model import ModelSource


def checked_method(cfg: CompressConfig, method: str | None, engines: dict[tuple[str, str], Engine]) -> str:
    """`method` (else what the config describes, else ptq), one that `cfg.engine` does."""
    method = (method or cfg.method_hint or "ptq").lower()
    if method not in ("ptq", "qat"):
        raise FastdetError(f"unknown method '{method}' (ptq or qat)")
    if (cfg.engine, method) not in engines:
        names = {"ptq": "post-training quantization", "qat": "quantization-aware training"}
        done = " or ".join(names[m] for e, m in engines if e == cfg.engine)
        raise FastdetError(f"engine {cfg.engine} does {done} only")
    return method


def check_devices(devices: str) -> None:
    if devices not in ("cpu", "gpu"):
        raise FastdetError(f"--devices must be cpu or gpu, got '{devices}'")
    if devices == "gpu":
        from fastdet_cli.runtime.registry import require_gpu

        require_gpu("compress --devices gpu")


def model_source(cfg: CompressConfig) -> ModelSource:
    """The model the config names, in the format it says (Global.format, Global.model_filename)."""
    from fastdet_cli.det.model import resolve_model

    path = cfg.model_dir
    if cfg.model_filename and path != "default":
        path = str(Path(path) / cfg.model_filename)
    source = resolve_model(path)
    if source.format != cfg.format:
        hint = " (set Global.format: onnx)" if source.format == "onnx" else ""
        raise FastdetError(f"{cfg.path}: Global.format is {cfg.format} but {source.path} is a {source.format} "
                           f"model{hint}")
    return source


def converted(source: ModelSource, cfg: CompressConfig, log) -> ModelSource:
    """An ONNX model as a Paddle program (compress/onnx_to_paddle.py): converted with x2paddle, its decomposed
    hard-swishes fused back into single ops, checked against ONNX Runtime on the first calibration image."""
    from fastdet_cli.compress.onnx_to_paddle import converted as to_paddle
    from fastdet_cli.compress.samples import FeedSamples, image_list

    feeds = onnx_feeds(source.path)
    first = FeedSamples(source, image_list(cfg.calib_images, 1), feeds)[0]
    program = to_paddle(source, {k: v[None] for k, v in first.items()}, log)
    log(f"{source.path.name} runs as the Paddle program {program.dir} (x2paddle; matches ONNX Runtime within "
        f"{program.sidecar().get('validation_max_rel_diff')} of each output's range on a real image)")
    return program


def onnx_feeds(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in init]


def model_facts(source: ModelSource, cfg: CompressConfig, method: str) -> tuple[list[str], dict, list[str]]:
    """(feed names, convolution weights → dims, single-output-channel convolution weights) of the model the job
    quantizes; for a Paddle program, QAT's batch and the skip lists are checked against it."""
    if source.format == "onnx":
        return onnx_feeds(source.path), {}, []
    from fastdet_cli.paddle_program import (conv_weights, feed_names, load_program, paddle_model_files,
                                            single_output_conv_weights)

    prog = load_program(paddle_model_files(source.dir)[0])
    feeds, convs = feed_names(prog), conv_weights(prog)
    if method == "qat":
        _check_qat_batch(prog, feeds, cfg)
    _check_skip_lists(prog, convs, cfg, source)
    return feeds, convs, single_output_conv_weights(prog)


def _check_qat_batch(prog, feeds: list[str], cfg: CompressConfig) -> None:
    """A fixed batch dimension must match the training batch (else PaddleSlim's traceback)."""
    from fastdet_cli.paddle_program import var_dims

    if "qat_batch_size" not in cfg.raw.get("Global", {}):
        return  # QAT takes the model's fixed batch (qat.run_qat)
    batch = int(cfg.raw["Global"]["qat_batch_size"])
    for name in feeds[:1]:  # the image (Paddle's feed check lets scale_factor's [1, 2] take a batch)
        dims = var_dims(prog, name)
        if dims and dims[0] > 0 and dims[0] != batch:
            raise FastdetError(f"{cfg.path}: the model's input '{name}' has a fixed batch of {dims[0]}; "
                               f"set Global.qat_batch_size: {dims[0]} (it is {batch})")


def _check_skip_lists(prog, convs: dict, cfg: CompressConfig, source: ModelSource) -> None:
    """PTQ.skip_tensor_list names tensors of the program (PTQ skips ops reading any of them),
    QuantAware.skip_tensor_list convolution weights."""
    tensors = {v.name for b in prog.blocks for v in b.vars}
    for key, section, known in (("PTQ.skip_tensor_list", cfg.ptq, tensors),
                                ("QuantAware.skip_tensor_list", cfg.quant, convs)):
        unknown = [w for w in section.get("skip_tensor_list", []) if w not in known]
        if unknown:
            raise FastdetError(f"{cfg.path}: {key}: {', '.join(map(str, unknown))} is not a "
                               f"{'tensor' if known is tensors else 'convolution weight'} of "
                               f"{source.dir.name} (e.g. {next(iter(convs), '?')})")


def image_files(cfg: CompressConfig, method: str, images: str) -> list[Path]:
    """The images `method` runs on: PTQ's at most batch_size × batch_nums (or Global.image_limit)."""
    from fastdet_cli.compress.samples import image_list

    limit = cfg.image_limit
    if method == "ptq" and limit is None:
        limit = int(cfg.ptq.get("batch_size", 8)) * int(cfg.ptq.get("batch_nums", 10))
    return image_list(images, limit)


def rank_share(files: list[Path], world: distributed.World, method: str, log) -> tuple[list[Path], list[int] | None]:
    """(this rank's images, images per rank) in a distributed run; (all of them, None) in one process. Each rank
    trains on its own share; equal shares, so every rank takes as many steps."""
    if world.size <= 1:
        return files, None
    if method != "qat":
        raise FastdetError(f"a distributed run ({world.size} processes) is for QAT; {method.upper()} runs in one "
                           "process (drop paddle.distributed.launch)")
    per = len(files) // world.size
    if per == 0:
        raise FastdetError(f"{len(files)} training images cannot be split between {world.size} processes")
    shards = [len(files[r::world.size][:per]) for r in range(world.size)]
    log(world.describe() + f"; {per} images per rank")
    return files[world.rank::world.size][:per], shards
