"""doctor, facts and diff as a user runs them, on this machine and on reports."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, run_cli

DATA = REPO / "tests/data/collect_env"


def test_doctor_on_this_machine_is_right_about_a_cpu_build() -> None:
    out = run_cli("doctor", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    facts = data["facts"]
    assert facts["torch_cuda"] is None  # never the host nvcc's 13.0
    if facts["torch"]:
        cpu = next(f for f in data["findings"] if f["code"] == "cpu-only-build")
        assert cpu["severity"] == "info" and "uses no CUDA" in cpu["message"]
        if facts["host_nvcc"]:
            assert f"host's nvcc {facts['host_nvcc']} is not used by torch" in cpu["message"]


def test_doctor_on_reports_exit_codes() -> None:
    bad = run_cli("doctor", "--collect-env", str(DATA / "torch-2.6.0-cu124-rtx5090.txt"))
    assert bad.returncode == 1 and "gpu-arch-unsupported" in bad.stdout
    ok = run_cli("doctor", "--collect-env", str(DATA / "torch-2.1.0-cu121-8xa100.txt"))
    assert ok.returncode == 0, ok.stdout


def test_error_log_sharpens(tmp_path: Path) -> None:
    log = tmp_path / "err.txt"
    log.write_text("RuntimeError: DataLoader worker (pid 4242) is killed by signal: Bus error.\n")
    out = run_cli(
        "doctor",
        "--collect-env",
        str(DATA / "torch-2.1.0-cu121-8xa100.txt"),
        "--error-log",
        str(log),
        "--json",
    )
    codes = [f["code"] for f in json.loads(out.stdout)["findings"]]
    assert out.returncode == 1 and "shm-too-small" in codes


def test_bad_input_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "future.json").write_text('{"kind": "torchship-facts", "schema_version": 9}')
    for args in (
        ["--collect-env", str(tmp_path / "empty.txt")],
        ["--collect-env", str(tmp_path / "garbage.bin")],
        ["--facts", str(tmp_path / "future.json")],
        ["--facts", str(tmp_path / "absent.json")],
        ["--lock", str(tmp_path / "absent.lock")],
    ):
        out = run_cli("doctor", *args)
        assert out.returncode == 2, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")


def test_facts_then_diff(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    assert run_cli("facts", "-o", str(a)).returncode == 0
    data = json.loads(a.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "torchship-facts"
    data["driver"], data["hostname"] = "550.54.15", "other"
    (tmp_path / "b.json").write_text(json.dumps(data))
    out = run_cli("diff", str(a), str(tmp_path / "b.json"), "--json")
    diffs = json.loads(out.stdout)["differences"]
    assert out.returncode == 0 and diffs[-1]["field"] == "hostname"
    same = run_cli("diff", str(a), str(a))
    assert "no differences" in same.stdout
