"""The one family of user-facing errors: caught at the CLI boundary, shown as one red line, exit code 2."""


class FastdetError(Exception):
    """A problem with the user's input or environment (not a bug in fastdet)."""


class MissingDependency(FastdetError):
    """A library a backend or command needs is not installed."""

    def __init__(self, module: str, extra: str, what: str):
        super().__init__(f"{what} needs the Python package '{module}', which is not installed: "
                         f"pip install 'fastdet-cli[{extra}]'")
        self.module, self.extra = module, extra


class NoDevice(FastdetError):
    """A requested device (e.g. a CUDA GPU) is not present."""


class UnsupportedMode(FastdetError):
    """A backend cannot run this model in the requested mode (a benchmark shows the mode as "None: why")."""
