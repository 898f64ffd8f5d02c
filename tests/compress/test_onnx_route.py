"""Issue 21: an ONNX detector with raw heads under any file name, through the search (which says when it missed
its budget) and through the reference's x2paddle route (conversion checked against ONNX Runtime)."""
import json
import shutil

import numpy as np
import pytest
import yaml

from fastdet_cli.cli import main
from fastdet_cli.runtime.registry import BACKENDS

pytestmark = pytest.mark.paddle


@pytest.fixture(scope="module")
def raw_onnx(tiny_models, tmp_path_factory, val_dataset):
    """The tiny raw-head PicoDet as a user's ONNX file not named model.onnx (no NMS in the graph, no fastdet.yml),
    and an unlabelled folder of 12 val images."""
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("raw_onnx")
    export_onnx(resolve_model(tiny_models["raw_heads"]), root / "export")
    model = root / "model"
    model.mkdir()
    shutil.copy(root / "export" / "model.onnx", model / "detector_raw.onnx")
    deploy = next(p for p in (root / "export").iterdir() if p.suffix in (".yml", ".yaml") and p.name != "fastdet.yml")
    shutil.copy(deploy, model / deploy.name)
    images = root / "images"
    images.mkdir()
    for _, p in val_dataset.image_paths(limit=12):
        shutil.copy(p, images / p.name)
    return model, images


def _config(path, model, images, **ptq):
    path.write_text(yaml.safe_dump({
        "Global": {"model_dir": str(model), "format": "onnx", "model_filename": "detector_raw.onnx",
                   "ptq_image_path": str(images), "deploy_backend": "onnxruntime"},
        "PTQ": {"calibration_method": "minmax", "batch_size": 1, "batch_nums": 8, **ptq}}))
    return path


def test_search_takes_any_file_name_and_says_when_the_budget_is_missed(raw_onnx, tmp_path, capsys):
    """A budget of 0 points (INT8 must agree with FP32 exactly) cannot be met: the best model found is written,
    the report says met false and why the search stopped, and diff repeats the warning."""
    model, images = raw_onnx
    cfg = _config(tmp_path / "c.yaml", model, images, max_map_drop=0.0, max_float_layers=2)
    out = tmp_path / "int8"
    assert main(["compress", str(cfg), "--save-dir", str(out)]) == 0
    said = capsys.readouterr().out
    report = json.loads((out / "compress_report.json").read_text())
    search = report["sensitivity_search"]
    assert report["met"] is False and search["met"] is False and search["stopped"]
    # the search ran: at least the model as quantized was measured (every check below is over these steps)
    steps = search["steps"]
    assert len(steps) >= 1, search
    assert search["fp32_runtime_ms"] > 0 and all(s["runtime_ms"] > 0 for s in steps)
    # every candidate was measured as a whole: 0 layers (as quantized), then 1 and 2 in float (the budget is the
    # constraint: the search does not stop because a candidate timed slower)
    assert [s["float_layers"] for s in steps] == [0, 1, 2], steps
    # each step's FP32 runtime was timed alternately with it, and the report says whether the model written is
    # faster (its value is a timing: recorded, not asserted)
    assert all(s["fp32_runtime_ms"] > 0 for s in steps) and isinstance(search["chosen_faster"], bool)
    # no candidate meets the budget: the most accurate one is written
    best, corrected = max(s["map"] for s in steps), search.get("bias_correction")
    if corrected and corrected["kept"]:  # the corrected model measured no worse on the search's images: written
        assert corrected["map_before"] == best and search["chosen_map"] == corrected["map_after"] >= best
    else:
        assert search["chosen_map"] == best
    assert "missed the accuracy budget" in said and "met false" in said
    assert main(["diff", str(images), "--model", str(model / "detector_raw.onnx"), "--int8-model", str(out),
                 "--limit", "2", "--save-dir", str(tmp_path / "diff")]) == 0
    assert "missed the accuracy budget" in capsys.readouterr().out


def test_x2paddle_conversion_is_checked_and_keeps_the_input_names(raw_onnx, tmp_path):
    from fastdet_cli.artifacts import detector
    from fastdet_cli.compress.onnx_to_paddle import convert, validate
    from fastdet_cli.det.model import resolve_model
    from fastdet_cli.det.preprocess import read_image
    from fastdet_cli.errors import FastdetError
    from fastdet_cli.paddle_program import feed_names, load_program, op_counts, static_program

    model, images = raw_onnx
    source = resolve_model(model / "detector_raw.onnx")
    image = read_image(sorted(images.iterdir())[0])
    with detector(source, BACKENDS["ort"]) as det:
        feed = det.feed(image)[0]
        want = det(image)
    program = convert(source, tmp_path / "converted", feed)
    side = program.sidecar()
    assert side["inputs_renamed"] == {"x2paddle_image": "image"}
    # x2paddle has no HardSwish: written as four ops for it, then one hard_swish op again in the program
    assert side["hard_swish_fused"] > 0 and "hard_swish" in op_counts(load_program(program.dir / "model.pdmodel"))
    assert feed_names(load_program(program.dir / "model.pdmodel")) == ["image"]
    assert side["validation_max_rel_diff"] < 1e-3
    # QAT distils the converted program's decoded outputs: one sigmoid score map and one DFL distribution per
    # stride, each distribution weighted by its stride's scores (issue 33)
    from fastdet_cli.compress.distill import default_nodes, partners

    nodes = default_nodes(program.dir / "model.pdmodel")
    kinds = [n.kind for n in nodes]
    assert set(kinds) == {"scores", "distribution"} and kinds.count("scores") == kinds.count("distribution") > 1
    assert all(n.shape[-1] % 4 == 0 for n in nodes if n.kind == "distribution")
    assert len(partners(nodes)) == kinds.count("distribution")
    with detector(program, BACKENDS["paddle"]) as det:  # the converted program is a model like any other
        got = det(image)
    assert len(want) > 0 and len(got) == len(want)
    assert np.allclose(got.boxes, want.boxes, atol=0.05) and np.allclose(got.scores, want.scores, atol=1e-3)
    # a conversion that computes something else is refused, naming what was tried
    with static_program(program.dir) as (prog, feeds, fetches, exe, scope, prefix):
        import paddle

        conv = next(op for op in prog.global_block().ops if op.type == "conv2d")
        t = scope.find_var(conv.input("Filter")[0]).get_tensor()
        t.set(np.array(t) * 3, paddle.CPUPlace())
        block = prog.global_block()
        (program.dir / "model.pdiparams").write_bytes(
            paddle.static.serialize_persistables([block.var(n) for n in feeds], fetches, exe, program=prog))
    with pytest.raises(FastdetError, match="does not match ONNX Runtime"):
        validate(source, program.dir, feed, log=lambda m: None)


def test_onnx_model_through_paddleslim_ptq(raw_onnx, tmp_path):
    """Global.engine paddleslim on an ONNX model: converted, quantized as a Paddle program, the FP32 model of the
    report is the user's ONNX file, and the INT8 program agrees with it."""
    model, images = raw_onnx
    cfg = _config(tmp_path / "c.yaml", model, images)
    raw = yaml.safe_load(cfg.read_text())
    raw["Global"].update(engine="paddleslim", eval_dataset=str(images))
    raw["PTQ"] = {"calibration_method": "abs_max", "batch_size": 1, "batch_nums": 8}
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "int8"
    assert main(["compress", str(cfg), "--save-dir", str(out)]) == 0
    report = json.loads((out / "compress_report.json").read_text())
    assert report["engine"] == "paddleslim" and report["source_format"] == "onnx"
    assert report["model_fp32"].endswith("detector_raw.onnx") and report["converted_fp32"]
    assert (out / "model.pdmodel").exists() and report["map"]["metric"] == "agreement mAP"
    assert report["map"]["int8"]["AP"] > 0.5
