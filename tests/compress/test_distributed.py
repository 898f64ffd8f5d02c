"""QAT under `python -m paddle.distributed.launch`: two CPU processes (gloo) on a tiny model built in code."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.paddle
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_static(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_static") / "model"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "tiny_static.py"), str(out)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _config(tmp_path, model, images) -> Path:
    cfg = tmp_path / "qat.yaml"
    cfg.write_text(yaml.safe_dump({
        "Global": {"model_dir": str(model), "qat_image_path": str(images), "qat_batch_size": 1},
        "Distillation": {"alpha": 1.0, "loss": "soft_label"},
        "QuantAware": {"onnx_format": True, "use_pact": False, "activation_quantize_type": "moving_average_abs_max"},
        "TrainConfig": {"train_iter": 4, "eval_iter": 4,
                        "learning_rate": {"type": "CosineAnnealingDecay", "learning_rate": 0.001, "T_max": 4},
                        "optimizer_builder": {"optimizer": {"type": "SGD"}, "weight_decay": 4.0e-05}}}))
    return cfg


def _launch(tmp_path, cfg, out) -> subprocess.CompletedProcess:
    """The documented command: the launcher runs the `fastdet` entry point once per rank."""
    fastdet = Path(sys.executable).parent / "fastdet"
    if not fastdet.exists():
        pytest.skip("the fastdet entry point is not installed beside this Python")
    return subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                           str(tmp_path / "log"), str(fastdet), "compress", str(cfg), "--save-dir", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_two_cpu_processes_write_one_output(tiny_static, val_dataset, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for _, p in val_dataset.image_paths(limit=8):
        shutil.copy(p, images / p.name)
    out = tmp_path / "out"
    proc = _launch(tmp_path, _config(tmp_path, tiny_static, images), out)
    logs = {p.name: p.read_text() for p in (tmp_path / "log").glob("workerlog.*")}
    assert proc.returncode == 0, (proc.stdout[-1500:], {k: v[-1500:] for k, v in logs.items()})
    assert "rank 0 writes the output" in logs["workerlog.1"] and "this is rank 1" in logs["workerlog.1"]
    # exactly one output, written by rank 0: the quantized program, the deploy config copied, the report
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))) == ["out"]
    assert (out / "model.pdmodel").exists() and (out / "infer_cfg.yml").read_bytes() == (
        tiny_static / "infer_cfg.yml").read_bytes()
    d = json.loads((out / "compress_report.json").read_text())["distributed"]
    # 8 images: 2 held back for the agreement check (never trained on), 3 per rank
    assert d["world_size"] == 2 and d["images_per_rank"] == [3, 3]
    assert d["averaged_steps"] >= 3 and d["weights_identical_across_ranks"] is True


def test_a_failing_rank_leaves_no_output(tiny_static, val_dataset, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, (_, p) in enumerate(val_dataset.image_paths(limit=4)):
        shutil.copy(p, images / p.name)
        if i == 1:  # rank 1's share (images[1::2]) holds an unreadable image: rank 1 fails while rank 0 trains
            (images / p.name).write_bytes(b"not an image")
    out = tmp_path / "out"
    proc = _launch(tmp_path, _config(tmp_path, tiny_static, images), out)
    assert proc.returncode != 0
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # rank 0 was stopped and cleaned up too
