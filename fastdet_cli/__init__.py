"""fastdet: PaddleDetection models from FP32 to a quantized deployment, with honest numbers.

Importing this package imports nothing heavy; the library lives in `det`, `runtime`, `export`, `data`,
`evaluate` and is imported where it is used."""

__version__ = "0.1.0"
