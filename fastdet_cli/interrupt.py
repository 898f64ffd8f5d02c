"""Ctrl-C (SIGINT) and SIGTERM always stop fastdet within seconds, exit code 130, nothing written at the output.

A signal raises KeyboardInterrupt in the main thread, which unwinds through `outputs.atomic_dir` (the temporary
output removed). Library code cannot always be trusted with it:
- Paddle's quantization passes wrap per-variable work in bare `except:` clauses and eat the KeyboardInterrupt:
  the run would go on and write its output (measured: 3 of 5 SIGINTs during compress on main 565077b);
- `import paddle` installs glog's failure-signal handler for SIGTERM over Python's (C level, unseen by
  `signal.getsignal`); on SIGTERM it dumps a stack trace and hung the process (measured).
So the signal is remembered and the handlers are guarded:
- `requested()` is true from the signal on: `io` puts no output in place (`check()`), `cli.main` exits 130 even
  if the command itself returned, and fastdet's own stage and loop boundaries call `check()`, which raises
  KeyboardInterrupt again;
- a watchdog thread is woken by the signal itself (`signal.set_wakeup_fd`: written by Python's C-level handler
  even while the main thread is inside a library call). It gives the main thread `GRACE` seconds to unwind;
  if the process still runs, it removes the temporary outputs registered with `temporary()` and ends the
  process with 130. While no signal has come, it checks every 0.1 s that the C-level handlers are still
  Python's, and puts them back where a library replaced them (sigaction through ctypes works from any thread).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path

GRACE = 3.0  # seconds between the signal and the watchdog's exit (the target is 5 s)
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []  # signal numbers, in order
_temporaries: dict[Path, int] = {}  # temporary outputs of this process (count of holders)
_lock = threading.Lock()


def requested() -> bool:
    """Whether an interrupt has arrived in this process (since `handled()` began)."""
    return bool(_received)


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt has arrived (library code may have swallowed the first one)."""
    if _received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def temporary(path: Path):
    """Register `path` (a temporary file or folder) as removed by the watchdog if it has to end the process."""
    path = Path(path)
    with _lock:
        _temporaries[path] = _temporaries.get(path, 0) + 1
    try:
        yield path
    finally:
        with _lock:
            _temporaries[path] -= 1
            if not _temporaries[path]:
                del _temporaries[path]


def _remove_temporaries() -> None:
    with _lock:
        paths = list(_temporaries)
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _handler(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


class _CHandlers:
    """The C-level handlers of SIGNALS as installed now (Python's), and a way to put them back from any thread:
    libc's sigaction through ctypes, each `struct sigaction` kept as opaque bytes. Empty where libc cannot be
    reached (then nothing is guarded)."""

    SIZE = 256  # glibc's struct sigaction is 152 bytes on x86_64 and aarch64

    def __init__(self):
        self.saved: dict[int, bytes] = {}
        try:
            import ctypes

            self._ctypes = ctypes
            self._sigaction = ctypes.CDLL(None, use_errno=True).sigaction
            self._sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        except (OSError, AttributeError):
            return
        self.saved = {s: self._read(s) for s in SIGNALS}

    def _read(self, sig: int) -> bytes:
        buf = self._ctypes.create_string_buffer(self.SIZE)
        self._sigaction(int(sig), None, buf)
        return buf.raw

    def restore(self) -> None:
        """Put back each handler a library replaced (compared by handler address, the struct's first field)."""
        width = self._ctypes.sizeof(self._ctypes.c_void_p) if self.saved else 0
        for sig, raw in self.saved.items():
            if self._read(sig)[:width] != raw[:width]:
                buf = self._ctypes.create_string_buffer(raw, self.SIZE)
                self._sigaction(int(sig), buf, None)


def _watch(read_fd: int, grace: float, done: threading.Event, handlers: _CHandlers, stderr_fd: int) -> None:
    """Until a signal byte arrives on `read_fd` (written by Python's C-level handler), keep the C-level handlers
    Python's; then give the main thread `grace` seconds to unwind (`done`), and end the process if it did not."""
    import select

    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.1)
        if done.is_set():
            return
        if not ready:
            handlers.restore()
            continue
        data = os.read(read_fd, 64)
        if not data:  # handled() ended: the write end was closed
            return
        signals = [b for b in data if b in SIGNALS]
        if signals:
            _received.extend(signals)  # also when a library's Python-level handler ran instead of ours
            break
    if done.wait(grace):
        return
    _remove_temporaries()
    try:  # on the command's own stderr (fd 2 may be sent to a log file meanwhile: outputs.library_output_to)
        os.write(stderr_fd, b"interrupted (library code went on after the signal: ended by fastdet)\n")
    finally:
        os._exit(130)


@contextlib.contextmanager
def handled(grace: float = GRACE):
    """Install the handlers and the watchdog for the duration of a command (main thread only; elsewhere, e.g.
    a test runner's worker thread, nothing is installed). The previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for s in SIGNALS:
        signal.signal(s, _handler)
    done = threading.Event()
    stderr_fd = os.dup(2)
    watchdog = threading.Thread(target=_watch, args=(read_fd, grace, done, _CHandlers(), stderr_fd),
                                name="fastdet-interrupt", daemon=True)
    watchdog.start()
    try:
        yield
    finally:  # the main thread has unwound: the watchdog stands down
        done.set()
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(old_fd)
        os.close(write_fd)
        watchdog.join(timeout=1)
        os.close(read_fd)
        os.close(stderr_fd)
