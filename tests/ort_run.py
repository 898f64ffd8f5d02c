"""One ONNX Runtime call for the graph-rewrite tests: a model file run on the CPU provider, 1 thread, optionally
writing the graph ORT optimized (to see what it fused)."""
import onnxruntime as ort


def run(path, x, optimized=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def quantize_qdq(src, dst, feeds, **options) -> None:
    """ORT's `quantize_static` of the model at `src` into `dst` (QDQ, per-channel int8 weights, uint8 activations),
    calibrated on `feeds` (a list of feed dicts); `options` go to quantize_static."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, **options)
