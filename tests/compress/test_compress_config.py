"""Strict validation of the auto-compression YAML (FastDeploy's format, both forms)."""
from pathlib import Path

import pytest

from fastdet_cli.compress.config import load_compress_config
from fastdet_cli.compress.qat import act_config
from fastdet_cli.errors import FastdetError
from fastdet_cli.paths import PACKAGE_DIR

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # other models' configs (examples)
PACKAGE_CONFIGS = PACKAGE_DIR / "configs"  # the embedded model's, shipped with the package


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", sorted([*CONFIGS.glob("*.yaml"), *PACKAGE_CONFIGS.glob("*.yaml")]),
                         ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_shipped_configs_load(path):
    name = path.name
    cfg = load_compress_config(path)
    onnx = "onnx" in name or name.startswith("real_layout")
    assert cfg.method_hint == ("ptq" if "ptq" in name or name == "real_layout.yaml" else "qat")
    assert cfg.format == ("onnx" if onnx else "paddle")
    # an ONNX model's engine is onnxruntime (its QAT trains the INT8 graph); a Paddle model's paddleslim
    assert cfg.engine == ("onnxruntime" if onnx or "ort" in name else "paddleslim")


def test_each_config_has_one_copy():
    """The embedded model's configs are in the package only (the code reads them there); configs/ has the rest."""
    package = {p.name for p in PACKAGE_CONFIGS.glob("*.yaml")}
    assert {"default_ptq.yaml", "default_ptq_ort.yaml", "default_qat.yaml"} <= package
    assert package.isdisjoint(p.name for p in CONFIGS.glob("*.yaml"))


def test_paths_resolve_relative_to_the_config_file(tmp_path):
    cfg = load_compress_config(write(tmp_path, "Global: {model_dir: ./m, qat_image_path: imgs}\nQuantAware: {}\n"))
    assert cfg.model_dir == str(tmp_path / "m") and cfg.method_hint == "qat"


def test_older_quantization_form_is_accepted(tmp_path):
    cfg = load_compress_config(write(tmp_path, "Global: {model_dir: m, arch: YOLO, preprocess: x}\n"
                                               "Quantization: {use_pact: true, quantize_op_types: [conv2d]}\n"))
    assert cfg.quant == {"use_pact": True, "quantize_op_types": ["conv2d"]}
    act = act_config(cfg, ["image", "scale_factor"])
    assert "arch" not in act["Global"] and act["Global"]["input_list"] == ["image", "scale_factor"]
    assert act["QuantAware"]["onnx_format"] is True


@pytest.mark.parametrize("text,match", [
    ("Global: {model_dir: m}\nPTQ: {calibraton_method: avg}\n", "unknown key 'PTQ.calibraton_method'"),
    ("Global: {model_dir: m}\nQAT: {}\n", "unknown section 'QAT'"),
    ("Global: {model_dir: m}\nPTQ: {batch_size: '8'}\n", "'PTQ.batch_size' must be int"),
    ("Global: {model_dir: m}\nQuantAware: {use_pact: 1}\n", "'QuantAware.use_pact' must be bool"),
    ("Global: {model_dir: m}\nPTQ: {calibration_method: minmax}\n", "calibration_method 'minmax'"),
    # a Paddle model with the ONNX template's PTQ section: the line names what to set instead
    ("Global: {model_dir: m, format: paddle}\nPTQ: {calibration_method: percentile}\n",
     "PaddleSlim calls it 'hist' — or set Global.engine: onnxruntime"),
    ("Global: {model_dir: m}\nPTQ: {per_channel: true}\n", "per_channel applies to engine onnxruntime only: remove "
     "it — or set Global.engine: onnxruntime"),
    ("Global: {model_dir: m, engine: paddleslim}\nPTQ: {calibration_method: entropy}\n",
     "PaddleSlim calls it 'KL'$"),
    ("Global: {format: paddle}\n", "Global.model_dir' is required"),
    ("Global: {model_dir: m, format: tflite}\n", "Global.format 'tflite' is not one of paddle, onnx"),
    ("Global: {model_dir: m, format: onnx}\nPTQ: {skip_tensor_list: [a]}\n", "names Paddle tensors"),
    ("Global: {model_dir: m}\nQuantAware: {}\nQuantization: {}\n", "not both"),
    ("Global: {model_dir: m}\nPTQ: {max_map_drop: -1}\n", "max_map_drop must be ≥ 0"),
    ("Global: {model_dir: m}\nPTQ: {max_float_layers: 0}\n", "max_float_layers must be ≥ 1"),
    ("Global: {model_dir: m}\nPTQ: {max_map_drop: half}\n", "'PTQ.max_map_drop' must be int/float"),
    ("Global: {model_dir: m, deploy_backend: ort}\n", "deploy_backend must be one of onnxruntime, openvino, tensorrt"),
    # engine onnxruntime's QAT trains its INT8 graph with its own loss: ACT's keys are named, not ignored
    ("Global: {model_dir: m, engine: onnxruntime}\nQuantAware: {}\nDistillation: {loss: l2}\n",
     "Distillation.loss applies to engine paddleslim's QAT only .*TrainConfig.epochs"),
    ("Global: {model_dir: m, engine: onnxruntime}\nTrainConfig: {train_iter: 100}\n", "TrainConfig.train_iter"),
    ("Global: {model_dir: m, qat_learn_rounding: false}\nQuantAware: {}\n",
     "qat_learn_rounding applies to engine onnxruntime only"),
    ("Global: {model_dir: m, engine: onnxruntime}\nQuantAware: {use_pact: true}\n", "QuantAware.use_pact"),
    ("Global: {model_dir: m, engine: onnxruntime}\nTrainConfig: {learning_rate: {type: CosineAnnealingDecay}}\n",
     "learning_rate is a number for engine onnxruntime"),
    ("Global: [1]\n", "must be a mapping"),
    ("Global: {model_dir: [m\n", "not valid YAML"),
])
def test_invalid_configs_name_key_and_file(tmp_path, text, match):
    with pytest.raises(FastdetError, match=match) as e:
        load_compress_config(write(tmp_path, text))
    assert "c.yaml" in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(FastdetError, match="not found"):
        load_compress_config(tmp_path / "nope.yaml")


def test_search_dataset_choice(tmp_path):
    from fastdet_cli.compress.ptq import search_dataset_spec

    cfg = load_compress_config(write(tmp_path, "Global: {model_dir: default}\nPTQ: {max_map_drop: 0.5}\n"))
    assert search_dataset_spec(cfg)[0] == "default:calib"  # never the val split mAP is reported on
    cfg = load_compress_config(write(tmp_path, "Global: {model_dir: m, ptq_image_path: imgs}\n"
                                               "PTQ: {max_map_drop: 0.5, search_dataset: held_out}\n"))
    assert search_dataset_spec(cfg) == (str(tmp_path / "held_out"), "PTQ.search_dataset")
    (tmp_path / "imgs").mkdir()
    cfg = load_compress_config(write(tmp_path, "Global: {model_dir: m, ptq_image_path: imgs, eval_dataset: ev}\n"
                                               "PTQ: {max_map_drop: 0.5}\n"))
    spec, why = search_dataset_spec(cfg)
    assert spec == str(tmp_path / "ev") and "not held out" in why
    cfg = load_compress_config(write(tmp_path, "Global: {model_dir: m, ptq_image_path: imgs}\n"
                                               "PTQ: {max_map_drop: 0.5}\n"))
    spec, why = search_dataset_spec(cfg)  # no annotations anywhere: agreement with FP32 on the calibration images
    assert spec == str(tmp_path / "imgs") and "agreement" in why


def test_default_output_is_named_after_the_config_in_the_current_folder(tmp_path, monkeypatch):
    """Never inside the package or configs/, and two shipped configs never write one folder."""
    from fastdet_cli.compress import default_save_dir

    monkeypatch.chdir(tmp_path)
    assert default_save_dir(PACKAGE_CONFIGS / "default_ptq.yaml", "ptq") == tmp_path / "default_ptq"
    assert default_save_dir(PACKAGE_CONFIGS / "default_ptq_ort.yaml", "ptq") == tmp_path / "default_ptq_ort"
    assert default_save_dir(PACKAGE_CONFIGS / "default_qat.yaml", "ptq") == tmp_path / "default_qat_ptq"
    assert default_save_dir(CONFIGS / "real_layout.yaml", "ptq") == tmp_path / "real_layout_ptq"
    assert default_save_dir(tmp_path / "elsewhere" / "my.yaml", "qat") == tmp_path / "my_qat"
