"""`torchship doctor --deep`: exercise the GPUs, not only read about them (opt-in).

Per visible GPU, a child process (so a hang or a crash is contained, and killed at its timeout)
launches a tiny kernel and times a bf16 matmul against the GPU's peak; with two or more GPUs,
two processes all-reduce over NCCL; the device nodes CUDA needs are checked; Xid lines are read
from the kernel log where it is readable; `dcgmi diag -r 1` runs where DCGM is installed. A check
that cannot run here says why (skipped), never passes silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship.doctor.checks import Finding
from torchship.doctor.checks.text import finding_of
from torchship.doctor.diagnosis import hits_in
from torchship.doctor.facts import Facts
from torchship.doctor.signatures import applies

KERNEL_TIMEOUT_S = 90.0
NCCL_TIMEOUT_S = 120.0
SLOW_SHARE = 0.25  # a matmul below this share of the GPU's dense bf16 peak is a warning

_GPU_CHILD = r"""
import json, sys, time
out = {"ok": False}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda_available"] = torch.cuda.is_available()
    if out["cuda_available"]:
        d = torch.device("cuda:0")
        out["name"] = torch.cuda.get_device_name(0)
        out["cc"] = "%d.%d" % torch.cuda.get_device_capability(0)
        x = torch.arange(1024, device=d, dtype=torch.float32)
        out["kernel_ok"] = float((x * 2).sum().item()) == float(1023 * 1024)
        n = int(sys.argv[1])
        a = torch.randn(n, n, device=d, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=d, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            for _ in range(10):
                a @ b
            reps += 10
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        out["matmul_tflops"] = 2 * n**3 * reps / seconds / 1e12
        out["ok"] = bool(out["kernel_ok"])
except Exception as e:  # reported, not raised: the parent reads the JSON line
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""

_NCCL_CHILD = r"""
import json, os, sys
import torch, torch.distributed as dist
rank = int(os.environ["RANK"])
torch.cuda.set_device(rank)
dist.init_process_group("nccl")
t = torch.ones(1 << 20, device="cuda") * (rank + 1)
dist.all_reduce(t)
torch.cuda.synchronize()
ok = bool((t == sum(range(1, int(os.environ["WORLD_SIZE"]) + 1))).all().item())
dist.destroy_process_group()
print(json.dumps({"rank": rank, "ok": ok}))
"""


@dataclass(frozen=True, slots=True)
class DeepCheck:
    name: str
    status: str  # ok | failed | skipped
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "figures": self.figures,
        }


@dataclass(frozen=True, slots=True)
class DeepResult:
    checks: tuple[DeepCheck, ...]
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {"checks": [c.to_json() for c in self.checks]}

    def render(self) -> str:
        marks = {"ok": "✓", "failed": "✗", "skipped": "-"}
        lines = ["deep checks:"]
        lines += [f"  {marks[c.status]} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


def _child(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """(exit code or None on timeout, stdout, stderr) of a contained child process. It runs in
    a session of its own, so a timeout kills it and every process it started (torchrun's
    workers holding GPUs included)."""
    env = {**env, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # indices as nvidia-smi numbers them
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out or "", "timed out"
    return proc.returncode, out, err


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def device_nodes(facts: Facts, root: Path = Path("/")) -> tuple[DeepCheck, list[Finding]]:
    if not facts.driver:
        return DeepCheck("device nodes", "skipped", "no NVIDIA driver on this machine"), []
    dev = root / "dev"
    wanted = ["nvidiactl", "nvidia-uvm", *(f"nvidia{g.index}" for g in facts.gpus)]
    missing = [n for n in wanted if not (dev / n).exists()]
    if not missing:
        return DeepCheck("device nodes", "ok", ", ".join(f"/dev/{n}" for n in wanted)), []
    finding = Finding(
        "no-gpu-visible",
        "error",
        f"/dev/{', /dev/'.join(missing)} missing: CUDA cannot start without "
        + ("the unified-memory device" if missing == ["nvidia-uvm"] else "them"),
        "load the module (`sudo modprobe nvidia-uvm`, or `nvidia-modprobe -u -c=0`); in a "
        "container, give it the devices (--gpus all / CDI) rather than mounting a subset",
        "hardware",
        evidence=tuple(f"/dev/{n} does not exist" for n in missing),
    )
    return DeepCheck("device nodes", "failed", "missing: " + ", ".join(missing)), [finding]


def gpu_kernels(
    facts: Facts, python: str, size: int = 8192, timeout: float = KERNEL_TIMEOUT_S
) -> tuple[list[DeepCheck], list[Finding]]:
    if not facts.gpus:
        return [DeepCheck("GPU kernel and matmul", "skipped", "no NVIDIA GPU visible")], []
    from torchship.workload.flops import peak_tflops

    checks, findings = [], []
    for g in facts.gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": g.uuid or str(g.index)}
        code, out, err = _child([python, "-c", _GPU_CHILD, str(size)], env, timeout)
        res = _last_json(out) or {}
        name = f"GPU {g.index} ({g.name})"
        if code is None:
            checks.append(DeepCheck(name, "failed", f"hung: killed after {timeout:.0f} s"))
            findings.append(_hang(g.index, g.name, timeout))
            continue
        if not res.get("ok"):
            why = res.get("error") or (err.strip().splitlines() or ["no output"])[-1]
            checks.append(DeepCheck(name, "failed", why[:300]))
            findings += _child_failure(facts, g.index, g.name, res, err)
            continue
        tflops = float(res["matmul_tflops"])
        peak = peak_tflops(str(res.get("name", g.name)))
        share = tflops / peak if peak else None
        detail = f"kernel ok; bf16 matmul {size}³ {tflops:.1f} TFLOP/s" + (
            f" = {share:.0%} of the {peak:.0f} TFLOP/s dense peak" if share else " (peak unknown)"
        )
        checks.append(
            DeepCheck(
                name,
                "ok",
                detail,
                {"matmul_tflops": round(tflops, 2), "peak_tflops": peak, "share": share},
            )
        )
        if share is not None and share < SLOW_SHARE:
            findings.append(
                Finding(
                    "gpu-hardware-fault",
                    "warning",
                    f"GPU {g.index} ({g.name}) reaches {share:.0%} of its bf16 peak in a plain "
                    "matmul: it is throttled, sharing, or degraded",
                    "check `nvidia-smi -q -d PERFORMANCE,CLOCK,TEMPERATURE,POWER` for throttle "
                    "reasons and other processes on the GPU",
                    "hardware",
                    evidence=(detail,),
                    confidence="medium",
                )
            )
    return checks, findings


def named_failures(facts: Facts, text: str, where: str, limit: int = 5) -> list[Finding]:
    """Findings for the failure lines of a child's output or a log, by the same signatures as
    pasted text; `where` says what produced the text."""
    hits = [h for h in hits_in(text) if applies(h, facts)]
    return [finding_of(h, (f"{where}, {h.evidence}",)) for h in hits[:limit]]


def _child_failure(
    facts: Facts, index: int, name: str, res: dict[str, Any], err: str
) -> list[Finding]:
    """What a failed GPU child says: a wrong result is a hardware fault; an error is read by
    the same signatures as pasted text; anything else is a fault with its last line."""
    if res.get("kernel_ok") is False:
        return [
            Finding(
                "gpu-hardware-fault",
                "error",
                f"GPU {index} ({name}) computed a wrong result for a tiny kernel",
                "drain the node; run `dcgmi diag -r 3` and check `nvidia-smi -q -d ECC`; a GPU "
                "that computes wrong results needs replacing",
                "hardware",
                evidence=(f"GPU {index}: sum of 2*arange(1024) was not {1023 * 1024}",),
            )
        ]
    text = f"{res.get('error', '')}\n{err}"
    named = named_failures(facts, text, f"GPU {index} ({name})")
    if named:
        return named[:1]
    last = (text.strip().splitlines() or ["no output"])[-1][:200]
    return [
        Finding(
            "gpu-hardware-fault",
            "warning",
            f"GPU {index} ({name}) failed a tiny kernel: {last}",
            "run `torchship doctor` for the cause; read the kernel log for Xid lines",
            "hardware",
            evidence=(f"GPU {index}: {last}",),
            confidence="low",
        )
    ]


def _hang(index: int, name: str, timeout: float) -> Finding:
    return Finding(
        "gpu-hardware-fault",
        "error",
        f"GPU {index} ({name}) did not finish a tiny kernel in {timeout:.0f} s",
        "read the kernel log for Xid lines (sudo dmesg | grep -i xid), reset the GPU "
        "(nvidia-smi -r) or reboot, and run `dcgmi diag -r 3`",
        "hardware",
        evidence=(f"GPU {index}: child process killed after {timeout:.0f} s",),
    )


def nccl_allreduce(
    facts: Facts, python: str, timeout: float = NCCL_TIMEOUT_S
) -> tuple[DeepCheck, list[Finding]]:
    if len(facts.gpus) < 2:
        why = f"needs two GPUs; {len(facts.gpus)} visible here"
        return DeepCheck("NCCL all-reduce", "skipped", why), []
    pair = facts.gpus[:2]
    names = " and ".join(f"GPU {g.index}" for g in pair)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "nccl_check.py")
        script.write_text(_NCCL_CHILD)
        argv = [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(script),
        ]
        visible = ",".join(g.uuid or str(g.index) for g in pair)
        code, out, err = _child(argv, {**os.environ, "CUDA_VISIBLE_DEVICES": visible}, timeout)
    if code is None:
        detail = f"{names}: hung, killed after {timeout:.0f} s"
        return DeepCheck("NCCL all-reduce", "failed", detail), [_nccl_finding(facts, detail, "")]
    oks = [json.loads(x).get("ok") for x in out.splitlines() if x.startswith("{")]
    if code == 0 and len(oks) == 2 and all(oks):
        return DeepCheck("NCCL all-reduce", "ok", f"2 processes, {names}, 4 MiB: correct"), []
    detail = f"{names}: " + (err.strip().splitlines() or ["no output"])[-1][:300]
    return DeepCheck("NCCL all-reduce", "failed", detail), [_nccl_finding(facts, detail, err)]


def _nccl_finding(facts: Facts, detail: str, err: str) -> Finding:
    named = named_failures(facts, err, detail)
    if named:
        return named[0]
    return Finding(
        "nccl-transport-failure",
        "error",
        f"two processes could not all-reduce over NCCL ({detail})",
        "rerun with NCCL_DEBUG=INFO; test NCCL_P2P_DISABLE=1 (PCIe ACS/IOMMU), and check "
        "`nvidia-smi topo -m`",
        "distributed",
        evidence=(detail,),
    )


def read_kernel_log() -> str | None:
    """dmesg, else this boot's kernel journal; None where neither is readable."""
    for argv in (["dmesg"], ["journalctl", "-k", "-b", "--no-pager", "-q"]):
        if shutil.which(argv[0]):
            code, out, _ = _child(argv, dict(os.environ), 20.0)
            if code == 0 and out:
                return out
    return None


def kernel_log(text: str | None, facts: Facts | None = None) -> tuple[DeepCheck, list[Finding]]:
    """Xid and NVRM errors in the kernel log, through the same signatures as pasted text."""
    if text is None:
        return DeepCheck("kernel log", "skipped", "dmesg and the journal are not readable here"), []
    found = [
        f
        for f in named_failures(facts or Facts(origin="probe"), text, "kernel log")
        if f.layer in ("hardware", "driver")
    ]
    if not found:
        n = len(re.findall(r"NVRM", text))
        return DeepCheck("kernel log", "ok", f"no Xid or NVRM errors ({n} NVRM lines read)"), []
    return DeepCheck(
        "kernel log", "failed", f"{len(found)} error line(s): {found[0].evidence[0]}"
    ), found


def dcgm_diag() -> DeepCheck:
    if not shutil.which("dcgmi"):
        return DeepCheck("dcgmi diag -r 1", "skipped", "DCGM is not installed")
    code, out, err = _child(["dcgmi", "diag", "-r", "1"], dict(os.environ), 120.0)
    if code == 0 and "Fail" not in out:
        return DeepCheck("dcgmi diag -r 1", "ok", "all tests passed")
    return DeepCheck(
        "dcgmi diag -r 1",
        "failed",
        (out + err).strip().splitlines()[-1][:300] if (out + err).strip() else "failed",
    )


def run_deep(facts: Facts, python: str = sys.executable) -> DeepResult:
    checks: list[DeepCheck] = []
    findings: list[Finding] = []
    nodes, f1 = device_nodes(facts)
    checks.append(nodes)
    findings += f1
    kernels, f2 = gpu_kernels(facts, python)
    checks += kernels
    findings += f2
    nccl, f4 = nccl_allreduce(facts, python)
    checks.append(nccl)
    findings += f4
    log, f3 = kernel_log(read_kernel_log(), facts)
    checks.append(log)
    findings += f3
    checks.append(dcgm_diag())
    return DeepResult(tuple(checks), tuple(findings))
