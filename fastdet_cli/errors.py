"""The one family of user-facing errors: caught at the CLI boundary, shown as one red line, exit code 2."""


class FastdetError(Exception):
    """A problem with the user's input or environment (not a bug in fastdet)."""


class MissingDependency(FastdetError):
    """A library a backend or command needs is not installed."""

    def __init__(self, module: str, extra: str, what: str, hint: str | None = None):
        """`hint`: the install command where no pip extra of fastdet brings the package (onnxruntime-gpu); else
        the extra's, in the CUDA flavour this machine's NVIDIA driver runs where the extra has flavours (trt)."""
        from fastdet_cli.machine import CUDA_FLAVOURED_EXTRAS, nvidia_driver, pip_hint

        if hint is None:
            hint = pip_hint(extra, nvidia_driver() if extra in CUDA_FLAVOURED_EXTRAS else None)
        super().__init__(f"{what} needs the Python package '{module}', which is not installed: {hint}")
        self.module, self.extra = module, extra


class NoDevice(FastdetError):
    """A requested device (e.g. a CUDA GPU) is not present."""


class UnsupportedMode(FastdetError):
    """A backend cannot run this model in the requested mode (a benchmark shows the mode as "None: why")."""
