"""`torchship simulate` as a user runs it: the table, the ratios, JSON, the chart, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, run_cli

TRACE = str(REPO / "examples/hybrid/trace-week.csv")
SITES = str(REPO / "examples/hybrid/sites.toml")


def test_simulate_prints_every_policy_and_the_ratios(tmp_path: Path) -> None:
    png = tmp_path / "cost-wait.png"
    r = run_cli("simulate", TRACE, "--sites", SITES, "--plot", str(png))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("323 jobs from")
    assert [ln.split()[0] for ln in lines[2:6]] == ["hybrid", "local-only", "cloud-only",
                                                    "cheapest"]  # fmt: skip
    cost = float(lines[-2].rsplit(": ", 1)[1])
    wait = float(lines[-1].rsplit(": ", 1)[1])
    assert cost <= 0.40 and wait <= 0.20
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_simulate_json_and_one_policy() -> None:
    r = run_cli("simulate", TRACE, "--sites", SITES, "--policy", "hybrid", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (res,) = out["results"]
    assert res["policy"] == "hybrid" and res["violations"] == 0 and res["ran"] == 323
    assert out["ratios"] == {}  # no baselines simulated


def test_simulate_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("name,submit_s,gpus,duration_s\na,0,two,60\n")
    r = run_cli("simulate", str(bad), "--sites", SITES)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0] == f"error: {bad}:line 2.gpus: 'two' is not a number"
    assert r.stderr.splitlines()[1].startswith("hint: ")
    r = run_cli("simulate", TRACE, "--policy", "greedy")
    assert r.returncode == 2 and "invalid choice" in r.stderr
