"""`fastdet bench`: runtime and end-to-end latency, FP32 vs INT8, with mAP on the same backend."""
