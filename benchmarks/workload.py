"""Reference workload: tokens/s with torch.compile against eager, in one run, same machine.

    python benchmarks/workload.py [--steps 40] [--backend inductor] [--nproc 1]

Runs `python -m torchship.workload` (the real workload, one process by default) twice with
the same model and seed: eager, then compiled. The first steps of each run (allocation and
compilation) are not timed. On a GPU the model is larger and the run also reports MFU
against the device's peak and the device model. Target on GPU: compile ≥ 1.2× eager.
The last line is the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# CPU: small enough for a 2-core CI machine; GPU: big enough for the tensor cores to matter.
CPU_MODEL = [
    "--d-model",
    "256",
    "--layers",
    "4",
    "--heads",
    "4",
    "--seq-len",
    "256",
    "--batch-size",
    "8",
]
GPU_MODEL = [
    "--d-model",
    "1024",
    "--layers",
    "12",
    "--heads",
    "16",
    "--seq-len",
    "1024",
    "--batch-size",
    "16",
]


def run(mode: str, steps: int, model: list[str], nproc: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "summary.json"
        args = [
            "-m",
            "torchship.workload",
            *model,
            "--steps",
            str(steps),
            "--log-every",
            str(steps),
        ]
        args += ["--compile", mode, "--summary", str(out)]
        if nproc > 1:
            launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
            args = [*launcher, *args]
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
        subprocess.run([sys.executable, *args], check=True, env=env)
        data: dict[str, Any] = json.loads(out.read_text())
        return data


def main() -> int:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--backend", default="inductor", choices=("inductor", "aot_eager"))
    p.add_argument("--nproc", type=int, default=1)
    a = p.parse_args()
    gpu = torch.cuda.is_available()
    model = GPU_MODEL if gpu else CPU_MODEL
    eager = run("off", a.steps, model, a.nproc)
    compiled = run(a.backend, a.steps, model, a.nproc)
    print(f"device: {eager['device']} × {eager['world_size']} · torch {eager['torch']}")
    print(f"model: {' '.join(model)} · {eager['params'] / 1e6:.1f}M params · {a.steps} steps")
    for name, s in (("eager", eager), (f"compile ({a.backend})", compiled)):
        line = (
            f"{name:>20}: {s['tokens_per_s']:>12,.0f} tokens/s · {s['step_ms_median']:.1f} ms/step"
        )
        if s.get("mfu") is not None:
            line += f" · MFU {s['mfu']:.1%} of {s['peak_tflops_per_gpu']} TFLOP/s"
        print(line)
    ratio = compiled["tokens_per_s"] / eager["tokens_per_s"]
    print(f"compile/eager tokens/s ratio: {ratio:.2f}x (target on GPU: >= 1.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
