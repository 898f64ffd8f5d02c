"""Runtime layer: one runner contract (`runtime.base`) and one backend table (`runtime.registry`).

Kept import-light: `fastdet --help` reads the backend table with only typer and rich installed."""
