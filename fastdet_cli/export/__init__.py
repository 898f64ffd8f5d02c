"""Exports: Paddle inference model → ONNX (NMS cut out, validated), ONNX → TensorRT engine."""
