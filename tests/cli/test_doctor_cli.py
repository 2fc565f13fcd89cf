"""doctor, facts and diff as a user runs them, on this machine and on reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, run_cli

DATA = REPO / "tests/data/collect_env"
STARTUP_S = 1.5  # a fresh interpreter importing torchship on a loaded 2-core machine


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


# --- any pasted text: --report ----------------------------------------------------------------

REPORTS = Path(__file__).resolve().parents[1] / "data/reports"


def _body(name: str) -> str:
    return REPORTS.joinpath(name).read_text().split("\n---\n", 1)[1]


def test_report_names_cause_and_evidence_in_json(tmp_path: Path) -> None:
    paste = tmp_path / "issue.md"
    paste.write_text(_body("extension-abi-mismatch-flash-attn-931.md"))
    out = run_cli("doctor", "--report", str(paste), "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    f = data["findings"][0]
    assert (f["code"], f["severity"], f["confidence"]) == (
        "extension-abi-mismatch",
        "error",
        "high",
    )
    assert f["evidence"] and f["evidence"][0].startswith("line ")
    assert "the GPU model" in data["report"]["unseen"] and data["facts"]["origin"] == "report"
    text = run_cli("doctor", "--report", str(paste))
    assert "evidence: line" in text.stdout and "not in the text:" in text.stdout


def test_report_from_stdin_and_nothing_found() -> None:
    none = subprocess.run(
        [sys.executable, "-m", "torchship", "doctor", "--report", "-"],
        input=_body("none-pytorch-15666.md"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert none.returncode == 0, none.stdout + none.stderr


def test_bad_report_input_ends_fast_with_one_clear_line(tmp_path: Path) -> None:
    """Binary garbage, 60 MB, one 1 MB line, /dev/zero, a FIFO, a directory: exit 2 (or a
    diagnosis for the long line) within 2 s, no traceback."""
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)) * 64)
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        fh.truncate(60 * 2**20)
    (tmp_path / "line.txt").write_text("x" * 2**20 + "\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = {
        "garbage.bin": "is binary",
        "big.txt": "is 60 MB",
        "line.txt": "nothing in it could be read",
        str(fifo): "not a regular file",
        "/dev/zero": "not a regular file",
        str(tmp_path): "is a directory",
        "missing.txt": "no such file",
    }
    for name, message in cases.items():
        path = name if name.startswith("/") else str(tmp_path / name)
        start = time.perf_counter()
        out = run_cli("doctor", "--report", path)
        took = time.perf_counter() - start
        assert out.returncode == 2, (name, out.stdout, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (name, out.stderr)
        assert took < 2.0 + STARTUP_S, (name, took)
    zero = subprocess.run(
        f"{sys.executable} -m torchship doctor --report - < /dev/zero",
        shell=True,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert zero.returncode == 2 and "more than 8 MB" in zero.stderr


def test_diff_accepts_two_pasted_reports(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(DATA.joinpath("torch-2.1.0-cu121-8xa100.txt").read_text())
    b.write_text(DATA.joinpath("torch-2.6.0-cu124-rtx5090.txt").read_text())
    out = run_cli("diff", str(a), str(b), "--json")
    assert out.returncode == 0, out.stderr
    fields = {d["field"]: d for d in json.loads(out.stdout)["differences"]}
    assert fields["torch"]["matters"] and fields["gpus"]["matters"]
    bad = run_cli("diff", str(a), str(tmp_path))
    assert bad.returncode == 2 and "is a directory" in bad.stderr
