"""Paddle → ONNX export of the three PaddleDetection export kinds, validated; error paths."""
import pytest
import yaml

from fastdet_cli.det.model import resolve_model
from fastdet_cli.errors import FastdetError
from fastdet_cli.export.onnx import export_onnx

pytestmark = pytest.mark.paddle


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {kind: export_onnx(resolve_model(path), root / kind) for kind, path in tiny_models.items()}


def test_nms_model_export_cuts_nms_and_records_parameters(exported, tiny_models):
    import onnx

    res = exported["nms"]
    assert res.nms_removed and res.nms["keep_top_k"] == 100 and res.nms["nms_top_k"] == 1000
    model = onnx.load(str(res.onnx_path))
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    assert not any(n.op_type == "NonMaxSuppression" for n in model.graph.node)
    side = yaml.safe_load((res.output_dir / "fastdet.yml").read_text())
    assert side["nms_removed"] and side["nms"]["score_threshold"] == pytest.approx(0.025)
    # validated: the cut graph gives what the program feeds its NMS
    assert set(res.max_diff) == {"boxes", "scores"} and max(res.max_diff.values()) < 1e-3  # before NMS
    # the deploy config is copied unchanged
    assert (res.output_dir / "infer_cfg.yml").read_bytes() == (tiny_models["nms"] / "infer_cfg.yml").read_bytes()


@pytest.mark.parametrize("kind", ["boxes_scores", "raw_heads"])
def test_nms_free_exports_match_paddle(exported, kind):
    res = exported[kind]
    assert not res.nms_removed and res.max_diff
    assert max(res.max_diff.values()) < 1e-3


def test_keep_nms_keeps_the_graph_nms(tiny_models, tmp_path):
    import onnx

    res = export_onnx(resolve_model(tiny_models["nms"]), tmp_path / "keep", remove_nms=False)
    assert any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(res.onnx_path)).graph.node)
    assert not res.nms_removed


def test_fp32_check_fails_when_the_graph_computes_something_else(exported, tiny_models, tmp_path):
    """Boxes scaled by 1% (a wrong scale factor, say): the FP32 check (outputs before NMS) refuses the graph."""
    import onnx
    from onnx import helper, numpy_helper

    import numpy as np

    from fastdet_cli.export.onnx import validate_export

    res = exported["nms"]
    model = onnx.load(str(res.onnx_path))
    for n in model.graph.node:
        n.output[:] = ["boxes_right" if o == "boxes" else o for o in n.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(1.01, np.float32), "one_percent"))
    model.graph.node.append(helper.make_node("Mul", ["boxes_right", "one_percent"], ["boxes"]))
    onnx.save(model, str(tmp_path / "scaled.onnx"))
    source = resolve_model(tiny_models["nms"])
    assert validate_export(source, res.onnx_path, res.nms)["boxes"] < 1e-3
    with pytest.raises(FastdetError, match="output boxes differs from Paddle Inference"):
        validate_export(source, tmp_path / "scaled.onnx", res.nms)


def test_int8_flag_on_a_float_model_is_refused_and_leaves_nothing(tiny_models, tmp_path):
    with pytest.raises(FastdetError, match="not a quantized model"):
        export_onnx(resolve_model(tiny_models["nms"]), tmp_path / "out", int8=True)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_program_is_a_clear_error(tiny_models, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_models["nms"].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.pdmodel").write_bytes(b"\x08\x01garbage" * 10)
    with pytest.raises(FastdetError, match="is not a Paddle program"):  # checked before paddle2onnx runs
        export_onnx(resolve_model(bad), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_paddle3_model_json_is_refused(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "infer_cfg.yml").write_text("Preprocess: []\nlabel_list: []\n")
    with pytest.raises(FastdetError, match="Paddle 3"):
        resolve_model(tmp_path)


def test_missing_weights_is_a_clear_error(tiny_models, tmp_path):
    (tmp_path / "model.pdmodel").write_bytes((tiny_models["nms"] / "model.pdmodel").read_bytes())
    (tmp_path / "infer_cfg.yml").write_bytes((tiny_models["nms"] / "infer_cfg.yml").read_bytes())
    with pytest.raises(FastdetError, match="weights missing"):
        resolve_model(tmp_path)


def test_missing_deploy_config(tiny_models, tmp_path):
    for name in ("model.pdmodel", "model.pdiparams"):
        (tmp_path / name).write_bytes((tiny_models["nms"] / name).read_bytes())
    with pytest.raises(FastdetError, match="no deploy config"):
        resolve_model(tmp_path)


def test_export_replaces_existing_output_atomically(tiny_models, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_onnx(resolve_model(tiny_models["boxes_scores"]), out, validate=False)
    assert sorted(p.name for p in out.iterdir()) == ["fastdet.yml", "infer_cfg.yml", "model.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["o"]
