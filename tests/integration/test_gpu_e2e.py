"""On a machine with an NVIDIA GPU and driver: facts and doctor against the real thing.

Skipped (with the reason) where there is no NVIDIA driver, which is every CI machine of this
project. Where it runs, it writes the facts it saw to $TORCHSHIP_GPU_FIXTURE_DIR (if set), so a
session with a lent GPU can commit them as tests/data/facts/<gpu>.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from torchship.doctor.probe import driver_version

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(driver_version() is None, reason="no NVIDIA driver on this machine"),
]


def test_facts_and_doctor_on_a_real_gpu(tmp_path: Path) -> None:
    facts_file = tmp_path / "facts.json"
    assert run_cli("facts", "--runtime", "-o", str(facts_file)).returncode == 0
    facts = json.loads(facts_file.read_text())
    assert facts["driver"] and facts["gpus"], facts
    assert all(g["cc"] for g in facts["gpus"])
    out = run_cli("doctor", "--facts", str(facts_file), "--json")
    findings = json.loads(out.stdout)["findings"]
    if facts["torch_cuda"]:
        assert facts["cuda_available"] is True, findings
        assert not [f for f in findings if f["code"] == "gpu-arch-unsupported"], findings
    fixture_dir = os.environ.get("TORCHSHIP_GPU_FIXTURE_DIR")
    if fixture_dir:
        name = facts["gpus"][0]["name"].lower().replace(" ", "-")
        Path(fixture_dir, f"{name}.json").write_text(json.dumps(facts, indent=2) + "\n")
        Path(fixture_dir, f"{name}.doctor.txt").write_text(
            run_cli("doctor", "--facts", str(facts_file)).stdout
        )


def test_reference_workload_with_nccl_on_every_gpu(tmp_path: Path) -> None:
    """DDP over NCCL on every GPU of the machine, bf16 autocast, MFU reported."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch is a CPU build")
    n = torch.cuda.device_count()
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "gpu-smoke"\nworkload = "reference"\ngpus_per_node = {n}\n'
        "[job.workload_args]\nsteps = 60\nd_model = 512\nlayers = 4\nheads = 8\nseq_len = 512\n"
    )
    home = {"TORCHSHIP_HOME": str(tmp_path / "home")}
    # --force: this test is about the workload over NCCL, not about the host's other findings
    r = run_cli("run", str(job), "--json", "--force", env=home)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout)["summary"]
    assert s["backend"] == ("nccl" if n > 1 else None) and s["world_size"] == n
    assert s["params_identical"] and s["final_loss"] < s["first_loss"]
    if s["peak_tflops_per_gpu"]:
        assert 0 < s["mfu"] < 1, s
