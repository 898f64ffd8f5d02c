"""One ONNX Runtime call for the graph-rewrite tests: a model file run on the CPU provider, 1 thread, optionally
writing the graph ORT optimized (to see what it fused)."""
import onnxruntime as ort


def run(path, x, optimized=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
