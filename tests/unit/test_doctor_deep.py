"""`doctor --deep` where no GPU exists (every CI machine of this project): each check runs or
says why it cannot; a GPU child that hangs or crashes is contained; device nodes and kernel log
lines are judged the same way as on a GPU machine. On a GPU machine, benchmarks/gpu_check.sh
runs the same code against the real thing."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from tests.conftest import REPO, run_cli
from tests.corpus import load_corpus
from torchship.doctor import deep
from torchship.doctor.facts import Facts, GPUFact

GPU_FACTS = Facts(
    origin="probe",
    driver="580.95.05",
    gpus=(GPUFact(0, "NVIDIA H100 80GB HBM3", cc="9.0"), GPUFact(1, "NVIDIA H100 80GB HBM3")),
)


def _fake_python(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_deep_on_a_machine_without_gpus_says_why_each_check_is_skipped() -> None:
    out = run_cli("doctor", "--deep", "--json")
    assert out.returncode in (0, 1), out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)["deep"]["checks"]}
    assert checks["GPU kernel and matmul"]["status"] == "skipped"
    assert "two GPUs" in checks["NCCL all-reduce"]["detail"]
    assert all(c["detail"] for c in checks.values())
    refused = run_cli("doctor", "--deep", "--report", "-")
    assert refused.returncode == 2 and "--deep checks this machine" in refused.stderr


def test_a_hung_gpu_child_is_killed_and_reported(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "sleep 30")
    start = time.perf_counter()
    checks, findings = deep.gpu_kernels(GPU_FACTS, python, timeout=1.0)
    assert time.perf_counter() - start < 10
    assert [c.status for c in checks] == ["failed", "failed"]
    assert "hung" in checks[0].detail
    assert findings[0].code == "gpu-hardware-fault" and findings[0].severity == "error"


def test_a_crashing_gpu_child_is_contained(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, 'echo "Segmentation fault (core dumped)" >&2; exit 139')
    checks, findings = deep.gpu_kernels(GPU_FACTS, python, timeout=5.0)
    assert checks[0].status == "failed" and "Segmentation fault" in checks[0].detail
    assert findings[0].severity == "warning" and findings[0].confidence == "low"


def test_a_wrong_result_is_a_hardware_error_and_a_cuda_error_is_named(tmp_path: Path) -> None:
    wrong = json.dumps({"ok": False, "kernel_ok": False, "name": "NVIDIA H100 80GB HBM3"})
    _, findings = deep.gpu_kernels(GPU_FACTS, _fake_python(tmp_path, f"echo '{wrong}'"))
    assert (findings[0].code, findings[0].severity) == ("gpu-hardware-fault", "error")
    err = json.dumps(
        {"ok": False, "error": "RuntimeError: CUDA error: uncorrectable ECC error encountered"}
    )
    _, findings = deep.gpu_kernels(GPU_FACTS, _fake_python(tmp_path, f"echo '{err}'"))
    assert findings[0].code == "gpu-hardware-fault" and "ECC" in findings[0].message


def test_a_hung_nccl_check_is_killed_with_its_workers(tmp_path: Path) -> None:
    """torchrun's workers hold the GPUs: a timeout must kill them too, not only the parent."""
    marker = tmp_path / "worker.pid"
    python = _fake_python(tmp_path, f"sleep 300 & echo $! > {marker}; wait")
    start = time.perf_counter()
    check, findings = deep.nccl_allreduce(GPU_FACTS, python, timeout=1.0)
    assert time.perf_counter() - start < 10
    assert check.status == "failed" and "hung" in check.detail and "GPU 0 and GPU 1" in check.detail
    assert findings[0].code == "nccl-transport-failure"
    pid = int(marker.read_text())
    for _ in range(50):
        if (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        ):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"worker {pid} outlived the timeout")


def test_a_slow_gpu_is_a_warning(tmp_path: Path) -> None:
    """The child's JSON line as the real child prints it; 50 of 989 TFLOP/s is throttled."""
    line = json.dumps({"ok": True, "name": "NVIDIA H100 80GB HBM3", "matmul_tflops": 50.0})
    checks, findings = deep.gpu_kernels(GPU_FACTS, _fake_python(tmp_path, f"echo '{line}'"))
    assert checks[0].status == "ok" and checks[0].figures["matmul_tflops"] == 50.0
    assert (
        findings and findings[0].severity == "warning" and "of its bf16 peak" in findings[0].message
    )


def test_missing_nvidia_uvm_is_an_error(tmp_path: Path) -> None:
    """The GPU Operator validator reported Ready with /dev/nvidia-uvm missing
    (NVIDIA/gpu-operator#2685); CUDA cannot start without it."""
    (tmp_path / "dev").mkdir()
    for name in ("nvidiactl", "nvidia0", "nvidia1"):
        (tmp_path / "dev" / name).write_text("")
    check, findings = deep.device_nodes(GPU_FACTS, tmp_path)
    assert check.status == "failed" and "nvidia-uvm" in check.detail
    assert findings[0].code == "no-gpu-visible" and findings[0].severity == "error"
    (tmp_path / "dev/nvidia-uvm").write_text("")
    assert deep.device_nodes(GPU_FACTS, tmp_path)[0].status == "ok"


def test_kernel_log_xid_lines_are_findings() -> None:
    """A real kernel log excerpt from the corpus (Xid 48 and 63, NVIDIA/nvidia-docker#849)."""
    report = next(r for r in load_corpus() if "nvidia-docker/issues/849" in r.source)
    check, findings = deep.kernel_log(report.body)
    assert check.status == "failed"
    assert {f.code for f in findings} == {"gpu-hardware-fault"}
    assert deep.kernel_log(None)[0].status == "skipped"
    assert deep.kernel_log("[    1.0] usb 1-1: new device\n")[0].status == "ok"


def test_gpu_check_script_runs_end_to_end_without_a_gpu(tmp_path: Path) -> None:
    """The prepared GPU check, as a lent machine runs it: here every GPU step says why not."""
    import subprocess
    import sys

    out = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads((tmp_path / "out/gpu_figures.json").read_text())
    assert figures["facts"]["rc"] == 0 and figures["doctor"]["report"]["deep"]["checks"]
    assert len(figures["host_probe"]["host_facts_s"]) == 3  # on a GPU host: nvidia-smi's cost
    assert figures["workload"]["status"] == "skipped" and figures["exporter"]["status"] == "skipped"
    assert figures["metrics"]["status"] == "ok"  # a real `metrics serve`, scraped 20 times
    assert figures["metrics"]["dcgm_series"] == []  # no GPU: no DCGM series, and no error
    assert (tmp_path / "out/facts.json").exists() and (tmp_path / "out/doctor-deep.json").exists()
