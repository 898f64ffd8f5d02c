"""The ONNX flavours are one table (export/targets.py): export, compress's Global.deploy_backend and the backend
table all name its rows."""
import pytest

from fastdet_cli.compress.config import DEPLOY_TARGETS, load_compress_config
from fastdet_cli.export.targets import EXPORT_TARGETS, ONNX_TARGETS
from fastdet_cli.runtime.registry import BACKENDS


def test_every_name_comes_from_the_table():
    assert DEPLOY_TARGETS is ONNX_TARGETS
    assert set(EXPORT_TARGETS) <= set(ONNX_TARGETS) and "openvino" not in EXPORT_TARGETS
    assert all(spec.onnx_target in EXPORT_TARGETS for spec in BACKENDS.values())  # what artifacts.onnx_for asks
    assert all(t.backend is None or t.backend in BACKENDS for t in ONNX_TARGETS.values())


@pytest.mark.parametrize("name", sorted(ONNX_TARGETS))
def test_compress_takes_every_target(tmp_path, name):
    p = tmp_path / "c.yaml"
    p.write_text(f"Global: {{model_dir: m, engine: onnxruntime, deploy_backend: {name}}}\nPTQ: {{}}\n")
    assert load_compress_config(p).deploy_backend == name


def test_export_refuses_a_flavour_it_does_not_write(tmp_path):
    from fastdet_cli.errors import FastdetError
    from fastdet_cli.export.onnx import export_onnx

    with pytest.raises(FastdetError, match="unknown export target 'openvino' \\(choose onnxruntime or tensorrt\\)"):
        export_onnx(None, tmp_path / "out", target="openvino")
