"""What real machines printed (tests/data/machines/, with how each file was taken) against what
torchship believes: the compatibility matrix against a torch that ran, the doctor against the
machine's own reports and against failures provoked on it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_cli
from torchship.compat import load_matrix
from torchship.doctor import diagnose
from torchship.doctor.diagnosis import diagnose_report
from torchship.doctor.facts import facts_from_json

H200 = REPO / "tests" / "data" / "machines" / "h200-torch-2.11-cu130"
FACTS = json.loads((H200 / "facts.json").read_text())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def test_the_matrix_says_what_the_h200_ran() -> None:
    """The build the H200 ran (kernels, a bf16 matmul, the reference workload) is what the
    resolver picks for that GPU and driver, with the arch list, cuDNN and NCCL it reported."""
    torch, variant = FACTS["torch"].split("+")
    r = run_cli(
        "resolve", "--torch", torch, "--gpu", FACTS["gpus"][0]["name"],
        "--driver", FACTS["driver"], "--python", "3.12", "--cuda", FACTS["torch_cuda"], "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["chosen"] == FACTS["torch"]
    detail = doc["detail"]
    assert detail["variant"] == variant
    assert detail["arch_list"] == FACTS["torch_arch"]  # torch.cuda.get_arch_list() there
    assert detail["cudnn"] == FACTS["packages"]["nvidia-cudnn-cu13"]
    assert detail["cudnn"].startswith(FACTS["torch_cudnn"])  # torch.backends.cudnn.version()
    assert detail["nccl"] == FACTS["torch_nccl"] == FACTS["packages"]["nvidia-nccl-cu13"]
    assert _version(detail["min_driver"]) <= _version(FACTS["driver"])
    assert doc["targets"] == [{"gpu": "H200", "cc": FACTS["gpus"][0]["cc"]}]


def test_the_h200s_own_facts_raise_no_alarm() -> None:
    facts = facts_from_json(FACTS, "facts.json")
    found = {f.code: f.severity for f in diagnose(facts, None, "", load_matrix())}
    assert found == {"tf32-numerics": "info"}  # cuDNN's TF32 is torch's default: a note only


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("collect_env.txt", {"collect-env"}),
        ("nvidia-smi.txt", {"nvidia-smi"}),
        ("nvidia-smi-q.txt", {"nvidia-smi-q"}),
    ],
)
def test_the_h200s_reports_are_read_whole_and_raise_no_alarm(name: str, parts: set[str]) -> None:
    d = diagnose_report((H200 / name).read_text(), load_matrix())
    assert {p.kind for p in d.parts} == parts
    assert d.facts.driver == FACTS["driver"]
    assert [g.name for g in d.facts.gpus] == ["NVIDIA H200"]
    assert not [f for f in d.findings if f.severity != "info"], d.findings
    if name == "collect_env.txt":
        assert d.facts.torch == FACTS["torch"] and d.facts.python == FACTS["python"]


def test_the_h200s_deep_check_is_the_contract_the_cli_promises() -> None:
    """`doctor --deep --json` as it came back from the GPU: every check ran or says why not."""
    doc = json.loads((H200 / "doctor-deep.json").read_text())
    checks = {c["name"]: c for c in doc["deep"]["checks"]}
    gpu = checks["GPU 0 (NVIDIA H200)"]
    assert gpu["status"] == "ok" and 0.25 < gpu["figures"]["share"] <= 1.0
    assert checks["NCCL all-reduce"]["status"] == "skipped"  # one GPU there
    assert all(c["status"] in ("ok", "skipped") and c["detail"] for c in checks.values())


MACHINES = REPO / "tests" / "data" / "machines"


@pytest.mark.parametrize(
    ("capture", "found"),
    [
        ("h200-torch-2.11-cu130/failures/cuda-init-in-fork.txt", {"cuda-init-in-fork": "error"}),
        ("h200-torch-2.11-cu130/failures/nccl-bad-ifname.txt", {"nccl-transport-failure": "error"}),
        ("h200-torch-2.11-cu130/failures/no-gpu-visible.txt", {"no-gpu-visible": "error"}),
        ("h200-torch-2.11-cu130/failures/nccl-duplicate-gpu.txt", {"gpu-rank-mapping": "error"}),
        # one process asking for cuda:1: likely, not certain, a launch with too many ranks
        ("h200-torch-2.11-cu130/failures/invalid-ordinal.txt", {"gpu-rank-mapping": "warning"}),
        ("h200-torch-2.11-cu130/failures/shm-too-small.txt", {"shm-too-small": "error"}),
        ("debian12-torch-2.13-cpu/failures/shm-too-small.txt", {"shm-too-small": "error"}),
        ("h200-torch-2.11-cu130/failures/out-of-memory.txt", {}),  # not the environment's fault
    ],
)
def test_failures_provoked_on_real_machines_are_named(capture: str, found: dict[str, str]) -> None:
    d = diagnose_report((MACHINES / capture).read_text(), load_matrix())
    assert {f.code: f.severity for f in d.findings if f.severity != "info"} == found, d.findings
