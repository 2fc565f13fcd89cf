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
  metrics      `torchship metrics serve` on 127.0.0.1: 20 scrapes read NVML afresh (--cache-s 0);
               the DCGM-named GPU series it serves, and the scrape times
  sweep        eager and compile for two more model sizes, while the time lasts: how the
               compile/eager figure depends on the model's shape
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
BUDGET_S = 315.0  # gpu_check.sh fits this, its captures and the pytest GPU tests in 8 minutes
GPU_MODEL = ["--d-model", "1024", "--layers", "12", "--heads", "16", "--seq-len", "1024"]
SWEEP = {  # name: model flags, batch size; the default model (GPU_MODEL, batch 16) runs first
    "d768-l12": (["--d-model", "768", "--layers", "12", "--heads", "12", "--seq-len", "1024"], 16),
    "d2048-l16": (["--d-model", "2048", "--layers", "16", "--heads", "16", "--seq-len", "1024"], 8),
}


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
        budget.left(60),
    )
    res.pop("stdout", None)
    if path.exists():
        res["facts"] = json.loads(path.read_text())
    return res


def host_probe_step() -> dict[str, Any]:
    """What picking an environment costs at every `exec`/`sync` start on this host: the driver's
    files alone (host_facts) against the doctor's whole probe, which asks nvidia-smi (and NVML
    where installed), three times each, and the GPUs each found."""
    from torchship.compat.matrix import load_matrix
    from torchship.doctor.probe import probe
    from torchship.env import host_facts

    m = load_matrix()
    out: dict[str, Any] = {}
    for what, read in (
        ("host_facts", lambda: host_facts(m)),
        ("probe_with_smi", lambda: probe(runtime=False, python=False)),
    ):
        times, found = [], None
        for _ in range(3):
            start = time.perf_counter()
            found = read()
            times.append(round(time.perf_counter() - start, 4))
        out[f"{what}_s"] = times
        out[f"{what}_gpus"] = [g.name for g in found.gpus] if found else []
    return out


def doctor_step(out: Path, budget: Budget) -> dict[str, Any]:
    res = _child(
        [sys.executable, "-m", "torchship", "doctor", "--deep", "--json"], budget.left(120)
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


def workload_pair(
    gpus: int, model: list[str], batch: int, matmul: float | None, budget: Budget
) -> dict[str, Any]:
    """The reference workload eager, then compiled, on `gpus` GPUs (up to 8)."""
    nproc = min(gpus, 8)
    out: dict[str, Any] = {"nproc": nproc, "model": " ".join(model), "batch_size": batch}
    for mode in ("off", "inductor"):
        with tempfile.TemporaryDirectory() as d:
            summary = Path(d) / "summary.json"
            argv = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={nproc}", "-m", "torchship.workload", *model,
                "--batch-size", str(batch), "--steps", "40", "--log-every", "40",
                "--compile", mode, "--summary", str(summary),
            ]  # fmt: skip
            # compiling takes longest: eager is held to 90 s so compile keeps its share
            res = _child(argv, budget.left(90 if mode == "off" else 180))
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


def workload_step(gpus: int, matmul: float | None, budget: Budget) -> dict[str, Any]:
    return workload_pair(gpus, GPU_MODEL, 16, matmul, budget)


def sweep_step(gpus: int, matmul: float | None, budget: Budget) -> dict[str, Any]:
    """More model sizes while at least 100 s are left (a pair takes about 70 s on an H200)."""
    out: dict[str, Any] = {}
    for name, (model, batch) in SWEEP.items():
        if budget.left(1e9) < 100:
            out[name] = {"status": "skipped", "why": "the time budget ran out"}
            continue
        out[name] = workload_pair(gpus, model, batch, matmul, budget)
    return out


def metrics_step(budget: Budget) -> dict[str, Any]:
    """The exporter as Prometheus sees it: a real server on 127.0.0.1, scraped 20 times."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torchship", "metrics", "serve", "--port", str(port),
             "--cache-s", "0"],
            env={**os.environ, "TORCHSHIP_HOME": home},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            end = time.perf_counter() + budget.left(20)
            body = ""
            while time.perf_counter() < end and not body:
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        body = r.read().decode()
                except OSError:
                    time.sleep(0.2)
            if not body:
                proc.terminate()
                return {"status": "error", "stderr_tail": (proc.communicate()[1] or "")[-2000:]}
            times = []
            for _ in range(20):
                start = time.perf_counter()
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = r.read().decode()
                times.append((time.perf_counter() - start) * 1000)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    times.sort()
    gpu_lines = [ln for ln in body.splitlines() if ln.startswith("DCGM_FI_")]
    return {
        "status": "ok",
        "scrape_ms_median": round(times[len(times) // 2], 2),
        "scrape_ms_max": round(times[-1], 2),
        "dcgm_series": gpu_lines,
    }


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

    def save() -> None:
        """After every step: a run cut short by its time limit still leaves what it measured."""
        (out / "gpu_figures.json").write_text(json.dumps(figures, indent=2) + "\n")

    figures["facts"] = facts_step(out, budget)
    facts = figures["facts"].get("facts") or {}
    gpus = len(facts.get("gpus") or [])
    figures["torch"] = facts.get("torch")
    figures["driver"] = facts.get("driver")
    figures["gpus"] = [g.get("name") for g in facts.get("gpus") or []]
    save()
    try:
        figures["host_probe"] = host_probe_step()
    except Exception as e:  # recorded; the rest still runs
        figures["host_probe"] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    save()
    figures["doctor"] = doctor_step(out, budget)
    figures["matmul_tflops_measured"] = measured_matmul(figures["doctor"])
    save()
    try:
        figures["exporter"] = exporter_step()
    except Exception as e:  # NVML's own errors: recorded, and the workload still runs
        figures["exporter"] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    save()
    if gpus and facts.get("cuda_available"):
        figures["workload"] = workload_step(gpus, figures["matmul_tflops_measured"], budget)
    else:
        figures["workload"] = {"status": "skipped", "why": "no usable NVIDIA GPU here"}
    save()
    try:
        figures["metrics"] = metrics_step(budget)
    except Exception as e:  # recorded; the sweep still runs
        figures["metrics"] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    save()
    if gpus and facts.get("cuda_available"):
        figures["sweep"] = sweep_step(gpus, figures["matmul_tflops_measured"], budget)
        save()
    w = figures["workload"]
    print(f"figures: {out / 'gpu_figures.json'}")
    print(
        f"GPUs: {figures['gpus'] or 'none'} · torch {figures['torch']} · driver {figures['driver']}"
    )
    hp = figures["host_probe"]
    print(f"pick's host probe: {hp.get('host_facts_s')} s; "
          f"with nvidia-smi {hp.get('probe_with_smi_s')} s")  # fmt: skip
    print(f"bf16 matmul measured: {figures['matmul_tflops_measured']} TFLOP/s")
    print(f"compile/eager: {w.get('compile_over_eager', w.get('why'))}")
    for name, pair in (figures.get("sweep") or {}).items():
        print(f"compile/eager {name}: {pair.get('compile_over_eager', pair.get('why'))}")
    m = figures["metrics"]
    print(f"metrics serve: {m.get('status')}, scrape median {m.get('scrape_ms_median')} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
