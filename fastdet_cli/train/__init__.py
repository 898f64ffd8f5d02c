"""Training helpers for the embedded default model (ppdet configs)."""
