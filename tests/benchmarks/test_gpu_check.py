"""benchmarks/gpu_check.sh, as far as it runs without a GPU: it parses, and it checks make, Python 3.11 with venv,
then the NVIDIA driver, in that order, each with one line saying what to install, before installing anything.
The machine is played by stand-in commands on an otherwise empty PATH."""
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
BASH = shutil.which("bash")


def test_it_parses():
    assert subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True).returncode == 0


# the plain tools the script uses besides the ones it checks for
COREUTILS = {name: f'exec {shutil.which(name)} "$@"' for name in ("grep", "head", "mkdir", "mktemp", "rm")}


def _run(tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess:
    """The script, copied into an empty clone, run with only `tools` (name → shell body) and COREUTILS on PATH."""
    clone = tmp_path / "clone"
    (clone / "benchmarks").mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, clone / "benchmarks" / "gpu_check.sh")
    bin_dir = tmp_path / "bin"
    shutil.rmtree(bin_dir, ignore_errors=True)
    bin_dir.mkdir()
    for name, body in {**COREUTILS, **tools}.items():
        (bin_dir / name).write_text(f"#!{BASH}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return subprocess.run([BASH, "benchmarks/gpu_check.sh", str(tmp_path / "out")], cwd=clone, capture_output=True,
                          text=True, env={"PATH": str(bin_dir)}, timeout=60)


PY311 = 'case "$*" in *version_info*) echo 3.11 ;; *ensurepip*) exit 0 ;; esac'


@pytest.mark.parametrize("tools, says", [
    ({}, "no make on PATH: install it first"),
    ({"make": ""}, "no Python at 'python3': install Python 3.11"),
    ({"make": "", "python3": "echo 3.12"}, "Python 3.12 at "),
    ({"make": "", "python3.11": 'case "$*" in *version_info*) echo 3.11 ;; *) exit 1 ;; esac'},
     "cannot make a virtual environment (no ensurepip): install python3.11-venv"),
    ({"make": "", "python3.11": PY311}, "no nvidia-smi: install the NVIDIA driver"),
    ({"make": "", "python3.11": PY311, "nvidia-smi": ""}, "nvidia-smi -L lists no GPU"),
])
def test_checks_come_first_in_order_with_one_line_each(tmp_path, tools, says):
    res = _run(tmp_path, tools)
    assert res.returncode == 2 and res.stdout == "", res
    assert res.stderr.startswith("gpu_check: ") and says in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "out").exists()  # nothing made before the checks pass


def test_the_driver_picks_the_extra_installed_from_the_clone(tmp_path):
    """Past the checks, the TensorRT extra is installed from the clone with pip install -e, in the driver's flavour
    (stand-ins: a GPU on driver 535, `make` that succeeds, a .venv python that records its arguments)."""
    smi = ('case "$*" in -L) echo "GPU 0: NVIDIA A10 (UUID: GPU-1)" ;; *driver_version*) echo 535.104.05 ;; esac')
    log = tmp_path / "pip.log"
    clone = tmp_path / "clone"
    (clone / ".venv" / "bin").mkdir(parents=True)
    venv_py = clone / ".venv" / "bin" / "python"
    venv_py.write_text(f'#!{BASH}\necho "$*" >> {log}\nexit 1\n')  # the first pip install fails: the script stops
    venv_py.chmod(0o755)
    res = _run(tmp_path, {"make": "", "python3.11": PY311, "nvidia-smi": smi})
    assert "driver 535.104.05: TensorRT 10 for CUDA 12 (pip extra trt-cu12)" in res.stdout, res
    assert log.read_text().splitlines()[0] == "-m pip install --quiet -c requirements.lock -e .[trt-cu12]"
    assert res.returncode == 2 and "pip install -e '.[trt-cu12]'" in res.stderr
