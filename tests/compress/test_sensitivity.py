"""The per-layer sensitivity search's graph surgery on the real INT8 export of the embedded model."""
import numpy as np
import pytest

from fastdet_cli.compress import sensitivity as S
from fastdet_cli.det.model import resolve_model
from fastdet_cli.artifacts import detector, onnx_for
from fastdet_cli.det.preprocess import read_image
from fastdet_cli.runtime.registry import BACKENDS

pytestmark = pytest.mark.paddle


@pytest.fixture(scope="module")
def exports(default_ptq, tmp_path_factory):
    import onnx

    from fastdet_cli.export.onnx import export_onnx

    int8 = export_onnx(resolve_model(default_ptq), tmp_path_factory.mktemp("int8") / "m", int8=True, validate=False)
    fp32 = onnx_for(resolve_model("default"))
    return onnx.load(str(fp32.path)), onnx.load(str(int8.onnx_path)), fp32.dir


def test_sites_name_paddle_weights_and_float_tensors(exports):
    _, int8, _ = exports
    sites = S.conv_sites(int8)
    assert len(sites) > 50
    assert all(s.weight.endswith(".w_0") for s in sites if s.weight)
    names = {i.name for i in int8.graph.initializer} | {o for n in int8.graph.node for o in n.output} | {
        i.name for i in int8.graph.input}
    assert all(s.activation in names for s in sites if s.activation)


def test_all_float_variant_reproduces_fp32_and_one_float_layer_changes_only_that(exports, val_dataset):
    fp32, int8, fp32_dir = exports
    with detector(fp32_dir, BACKENDS["ort"]) as det:
        feeds = [det.feed(read_image(p))[0] for _, p in val_dataset.image_paths(limit=4)]
    probe = S.OutputProbe(fp32, feeds)
    sites = S.conv_sites(int8)
    full, none = probe.error(int8), probe.error(S.with_float(int8, sites))
    assert none < 1e-3 < full  # float wiring undoes the quantization of every conv
    one = S.with_float(int8, sites[:1])
    changed = [(a.input, b.input) for a, b in zip(int8.graph.node, one.graph.node) if a.input != b.input]
    assert len(changed) == 1 and changed[0][1][1] == sites[0].weight
    assert np.isfinite(probe.error(one))
