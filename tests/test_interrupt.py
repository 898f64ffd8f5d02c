"""Ctrl-C and SIGTERM always stop compress: exit 130 within 5 s, nothing at --save-dir, no temporary folder left —
sent to the process group (as a terminal does) while PaddleSlim's quantization passes run, where bare `except:`
clauses eat the KeyboardInterrupt and where glog's SIGTERM handler (installed by `import paddle`) once hung."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.paddle

PASSES = "Update the program"  # PaddleSlim's log line when its quantization passes start (~5-15 s on 2 cores)


def _interrupt_compress(tmp_path: Path, sig: int, delay: float) -> tuple[int, float, str]:
    """Start compress, wait for PaddleSlim's passes to start and `delay` more seconds, send `sig` to the process
    group; (exit code, seconds from the signal to the exit, stderr)."""
    config = tmp_path / "ptq.yaml"
    config.write_text("Global: {model_dir: default, format: paddle, ptq_image_path: default}\n"
                      "PTQ: {calibration_method: avg, batch_size: 8, batch_nums: 2}\n")
    proc = subprocess.Popen([sys.executable, "-m", "fastdet_cli", "compress", str(config), "--save-dir",
                             str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path)
    try:
        first = ""
        while ".log" not in first and len(first) < 2000:  # a long path may be folded onto the next line
            first += proc.stdout.readline().rstrip("\n")
        log = Path(re.search(r"goes to (\S+\.log)", first).group(1))
        deadline = time.monotonic() + 300
        while PASSES not in (log.read_text(errors="replace") if log.exists() else ""):
            assert proc.poll() is None, (first, proc.stdout.read(), proc.stderr.read())
            assert time.monotonic() < deadline, "PaddleSlim's passes never started"
            time.sleep(0.05)
        time.sleep(delay)
        assert proc.poll() is None, "compress finished before the signal: the test cannot tell anything"
        sent = time.monotonic()
        os.killpg(proc.pid, sig)
        rc = proc.wait(timeout=30)
        return rc, time.monotonic() - sent, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("sig, delay", [(signal.SIGINT, 0.5), (signal.SIGINT, 2.0), (signal.SIGTERM, 1.0)],
                         ids=["sigint-early", "sigint-later", "sigterm"])
def test_signal_inside_the_quantization_passes_stops_compress(tmp_path, sig, delay):
    rc, seconds, err = _interrupt_compress(tmp_path, sig, delay)
    assert rc == 130, (rc, err)
    assert seconds < 5, seconds
    assert "interrupted" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary folder left
