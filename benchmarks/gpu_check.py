"""Every GPU path torchship has, on a machine with an NVIDIA GPU, in one command (run by
benchmarks/gpu_check.sh; at most 8 minutes, no network, the machine's own torch).

Steps, each in a child process with its own time limit, each recorded whatever happens:
  facts        `torchship facts --runtime`: the machine as the doctor sees it (kept as a fixture)
  doctor       `torchship doctor --deep --json`: a kernel and a bf16 matmul per GPU, NCCL
               between two GPUs, device nodes, Xid lines, dcgmi diag (kept as a fixture)
  workload     the reference DDP workload over NCCL on every GPU (up to 8), eager and
               torch.compile: tokens/s, MFU against the datasheet peak and against the bf16
               matmul rate measured by the doctor
  exporter     the exporter's NVML reader: one real sample per GPU
All figures go to $OUT/gpu_figures.json (OUT: the folder given, else a temporary one). On a
machine without an NVIDIA GPU every GPU step says so and is skipped; the script still ends 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 450.0  # leaves a margin under the 8 minutes a lent machine allows
GPU_MODEL = ["--d-model", "1024", "--layers", "12", "--heads", "16", "--seq-len", "1024"]


def _child(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"rc": None, "seconds": round(time.perf_counter() - start, 1), "error": "timeout"}
    return {
        "rc": proc.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "stdout": proc.stdout,
        "stderr_tail": proc.stderr[-2000:],
    }


class Budget:
    def __init__(self, total: float) -> None:
        self.end = time.perf_counter() + total

    def left(self, cap: float) -> float:
        return min(cap, self.end - time.perf_counter())


def facts_step(out: Path, budget: Budget) -> dict[str, Any]:
    path = out / "facts.json"
    res = _child(
        [sys.executable, "-m", "torchship", "facts", "--runtime", "-o", str(path)],
        budget.left(90),
    )
    res.pop("stdout", None)
    if path.exists():
        res["facts"] = json.loads(path.read_text())
    return res


def doctor_step(out: Path, budget: Budget) -> dict[str, Any]:
    res = _child(
        [sys.executable, "-m", "torchship", "doctor", "--deep", "--json"], budget.left(240)
    )
    text = res.pop("stdout", "") or ""
    (out / "doctor-deep.json").write_text(text)
    try:
        res["report"] = json.loads(text)
    except json.JSONDecodeError:
        res["report"] = None
    return res


def measured_matmul(doctor: dict[str, Any]) -> float | None:
    checks = ((doctor.get("report") or {}).get("deep") or {}).get("checks") or []
    rates = [
        c["figures"]["matmul_tflops"]
        for c in checks
        if c.get("status") == "ok" and "matmul_tflops" in c.get("figures", {})
    ]
    return min(rates) if rates else None


def workload_step(gpus: int, matmul: float | None, budget: Budget) -> dict[str, Any]:
    nproc = min(gpus, 8)
    out: dict[str, Any] = {"nproc": nproc}
    for mode in ("off", "inductor"):
        with tempfile.TemporaryDirectory() as d:
            summary = Path(d) / "summary.json"
            argv = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={nproc}", "-m", "torchship.workload", *GPU_MODEL,
                "--batch-size", "16", "--steps", "40", "--log-every", "40",
                "--compile", mode, "--summary", str(summary),
            ]  # fmt: skip
            res = _child(argv, budget.left(150))
            res.pop("stdout", None)
            if summary.exists():
                s = json.loads(summary.read_text())
                res["summary"] = s
                achieved = (s.get("mfu") or 0) * (s.get("peak_tflops_per_gpu") or 0)
                if matmul and achieved:
                    res["mfu_vs_measured_matmul"] = round(achieved / matmul, 4)
            out["eager" if mode == "off" else "compile"] = res
    e = (out.get("eager") or {}).get("summary") or {}
    c = (out.get("compile") or {}).get("summary") or {}
    if e.get("tokens_per_s") and c.get("tokens_per_s"):
        out["compile_over_eager"] = round(c["tokens_per_s"] / e["tokens_per_s"], 3)
    return out


def exporter_step() -> dict[str, Any]:
    from torchship.monitor.gpus import open_reader

    reader, why = open_reader()
    if reader is None:
        return {"status": "skipped", "why": why}
    start = time.perf_counter()
    samples = reader.read()
    return {
        "status": "ok",
        "read_ms": round((time.perf_counter() - start) * 1000, 1),
        "samples": [
            {"name": x.name, "util_pct": x.util_pct, "fb_used_mib": round(x.fb_used_mib),
             "temp_c": x.temp_c, "power_w": x.power_w, "xid": x.xid}
            for x in samples
        ],
    }  # fmt: skip


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="gpucheck-"))
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(BUDGET_S)
    figures: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    figures["facts"] = facts_step(out, budget)
    facts = figures["facts"].get("facts") or {}
    gpus = len(facts.get("gpus") or [])
    figures["torch"] = facts.get("torch")
    figures["driver"] = facts.get("driver")
    figures["gpus"] = [g.get("name") for g in facts.get("gpus") or []]
    figures["doctor"] = doctor_step(out, budget)
    figures["matmul_tflops_measured"] = measured_matmul(figures["doctor"])
    if gpus and facts.get("cuda_available"):
        figures["workload"] = workload_step(gpus, figures["matmul_tflops_measured"], budget)
    else:
        figures["workload"] = {"status": "skipped", "why": "no usable NVIDIA GPU here"}
    figures["exporter"] = exporter_step()
    (out / "gpu_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    w = figures["workload"]
    print(f"figures: {out / 'gpu_figures.json'}")
    print(
        f"GPUs: {figures['gpus'] or 'none'} · torch {figures['torch']} · driver {figures['driver']}"
    )
    print(f"bf16 matmul measured: {figures['matmul_tflops_measured']} TFLOP/s")
    print(f"compile/eager: {w.get('compile_over_eager', w.get('why'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
