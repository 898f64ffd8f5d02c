"""Which oneDNN kernels Paddle Inference runs for a model: one inference in a child process with ONEDNN_VERBOSE=1
(oneDNN reads it once, at its first use, so it cannot be switched on in a process that has run Paddle), its
convolution lines counted by implementation ISA and source data type.

The child is `python -m fastdet_cli.runtime.paddle MODEL_DIR OPTIONS_JSON FEED.npz` (runtime/paddle.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def parse_verbose(text: str) -> dict[str, int]:
    """'onednn_verbose,exec,cpu,convolution,brgconv_1x1:avx512_core_amx,forward_inference,src_s8::…' lines →
    {"avx512_core_amx int8": n, …} (a v3 line: field 4 is impl:isa, field 6 the memory descriptors)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) < 7 or f[0] != "onednn_verbose" or f[1] != "exec" or f[3] != "convolution":
            continue
        isa = f[4].split(":")[-1]
        src = next((w for w in f[6].split() if w.startswith("src_")), "")
        kind = src.split(":")[0].removeprefix("src_")
        fmt = "int8" if kind in ("s8", "u8") else kind or "?"
        key = f"{isa} {fmt}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def probe(model_dir: Path, options: dict, feed: dict) -> dict[str, int]:
    """Run the child for `model_dir` with RunnerOptions fields `options` on `feed`; {} when oneDNN printed
    nothing (or the child failed: kernels are a report, never a reason to stop a benchmark)."""
    import tempfile

    import numpy as np

    env = dict(os.environ, ONEDNN_VERBOSE="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="fastdet-onednn-") as tmp:
        np.savez(Path(tmp) / "feed.npz", **feed)
        proc = subprocess.run([sys.executable, "-m", "fastdet_cli.runtime.paddle", str(model_dir),
                               json.dumps(options), str(Path(tmp) / "feed.npz")], capture_output=True, text=True,
                              env=env)
    return parse_verbose(proc.stdout) if proc.returncode == 0 else {}
