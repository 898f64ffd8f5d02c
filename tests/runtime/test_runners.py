"""The runner contract on small ONNX graphs built in code, and the backend table's errors."""
import numpy as np
import pytest

from fastdet_cli.errors import FastdetError, MissingDependency, NoDevice
from fastdet_cli.runtime.base import RunnerOptions
from fastdet_cli.runtime.registry import BACKENDS, create_runner, get_backend


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory):
    """Conv(3→4, 3x3) + Relu on a [1,3,8,8] input, weights fixed by a seed."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["out"])],
        "conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path_factory.mktemp("onnx") / "conv.onnx"
    onnx.save(model, str(path))
    return path, w


def _reference(x, w):
    out = np.zeros((1, 4, 8, 8), np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(8):
        for j in range(8):
            out[0, :, i, j] = np.tensordot(w, xp[0, :, i:i + 3, j:j + 3], axes=([1, 2, 3], [0, 1, 2]))
    return np.maximum(out, 0)


@pytest.mark.parametrize("backend", ["ort", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_runner_computes_conv(conv_onnx, backend):
    path, w = conv_onnx
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    with create_runner(backend, path, RunnerOptions(threads=1)) as r:
        meta = r.input_metadata()
        assert list(meta) == ["image"] and meta["image"].shape == (1, 3, 8, 8)
        (out,) = r.infer({"image": x})
        assert r.last_inference_time > 0 and r.build_time > 0
    np.testing.assert_allclose(out, _reference(x, w), atol=1e-4)
    assert not r.is_active


def test_state_and_input_checks(conv_onnx):
    path, _ = conv_onnx
    r = create_runner("ort", path, RunnerOptions())
    with pytest.raises(FastdetError, match="before activate"):
        r.infer({})
    with r:
        with pytest.raises(FastdetError, match="missing model input"):
            r.infer({"other": np.zeros(1, np.float32)})
        with pytest.raises(FastdetError, match="dtype"):
            r.infer({"image": np.zeros((1, 3, 8, 8), np.float64)})
        with pytest.raises(FastdetError, match="shape"):
            r.infer({"image": np.zeros((1, 3, 9, 8), np.float32)})
        with pytest.raises(FastdetError, match="already active"):
            r.activate()


def test_unknown_backend_did_you_mean():
    with pytest.raises(FastdetError, match="did you mean 'openvino'"):
        get_backend("openvin")


def test_backend_table_abilities_drive_modes_and_cli_help():
    from typer.testing import CliRunner

    from fastdet_cli.cli import app
    from fastdet_cli.errors import UnsupportedMode

    out = CliRunner().invoke(app, ["infer", "--help"], env={"COLUMNS": "200"}).output
    assert all(name in out for name in BACKENDS)  # the --help choices come from the table
    for name, spec in BACKENDS.items():
        for mode in ("fp32", "bf16", "int8", "int8+fp16", "int8+fp16+pm"):
            if mode in spec.modes:
                opts = spec.mode_options(mode, 3)
                assert opts.threads == 3 and opts.precision == mode.split("+")[0] and opts.pinned == mode.endswith("pm")
                assert opts.device == ("gpu" if spec.gpu_only else "cpu")
                continue
            with pytest.raises(UnsupportedMode) as e:
                spec.mode_options(mode, 3)
            if mode in dict(spec.no_mode_reasons):  # a reason of its own, e.g. ORT has no bf16 kernels
                assert str(e.value) == dict(spec.no_mode_reasons)[mode]
            else:
                assert str(e.value).startswith(f"{name} has no")


def test_missing_library_names_the_extra(conv_onnx):
    if get_backend("trt").installed():
        pytest.skip("tensorrt is installed here")
    # the CUDA flavour (machine.pip_hint)
    with pytest.raises(MissingDependency, match=r"pip install -e '\.\[trt-cu12\]'"):
        create_runner("trt", conv_onnx[0], RunnerOptions(device="gpu"))


@pytest.mark.paddle
def test_gpu_backend_without_gpu_is_a_clear_error(tmp_path, tiny_models):
    from fastdet_cli.runtime.registry import cuda_device_count

    import paddle

    if cuda_device_count() or paddle.is_compiled_with_cuda():
        pytest.skip("a GPU or Paddle's GPU build is present")
    # the CPU wheel would run paddle-trt on the CPU and call it paddle-trt: refused, saying why
    r = create_runner("paddle-trt", tiny_models["nms"], RunnerOptions(device="gpu"))
    with pytest.raises(NoDevice, match="needs Paddle's GPU build .* the CPU build"):
        r.activate()
    # a GPU-only backend asked for the default cpu device picks the GPU itself, and says what is missing
    r = create_runner("paddle-trt", tiny_models["nms"], RunnerOptions(device="cpu"))
    assert r.options.device == "gpu"
    with pytest.raises(NoDevice, match="GPU build"):
        r.activate()
    r = create_runner("paddle", tiny_models["nms"], RunnerOptions(device="gpu"))
    with pytest.raises(NoDevice, match="needs an NVIDIA GPU"):
        r.activate()


def test_precision_not_offered(conv_onnx):
    with pytest.raises(FastdetError, match="no fp16 mode"):
        create_runner("ort", conv_onnx[0], RunnerOptions(precision="fp16"))


def test_corrupt_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(FastdetError, match="ONNX Runtime cannot load"):
        create_runner("ort", bad, RunnerOptions()).activate()


@pytest.mark.openvino
def test_openvino_fp32_sets_f32_hint(conv_onnx):
    with create_runner("openvino", conv_onnx[0], RunnerOptions()) as r:
        assert "float32" in str(r.compiled.get_property("INFERENCE_PRECISION_HINT"))
