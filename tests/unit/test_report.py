"""The report's pure parts: reading JSON lines that a killed run left torn, the cost (the same
rule as the exporter's counter), the start and end from the supervisor's records, and the
page escaping what it shows."""

from __future__ import annotations

import json
from pathlib import Path

from torchship.monitor.report import gather, read_jsonl, render
from torchship.state import Event, Job


def job(state: str = "succeeded", placement: dict[str, object] | None = None) -> Job:
    return Job(id="01job", key="k", name="<b>demo</b>", spec={}, lock_hash=None, site="local",
               placement=placement, state=state, handle="local://h/01job", exit_code=0,
               created_at=1000.0, updated_at=4600.0)  # fmt: skip


def test_read_jsonl_skips_what_is_not_an_object(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n\n[1, 2]\n{"step": 2}\n{"step": 3, "lo')
    rows, bad = read_jsonl(p)
    assert rows == [{"step": 1}, {"step": 2}] and bad == 2


def test_cost_is_the_placement_rate_over_the_jobs_span() -> None:
    events = [Event("01job", "pending", 1000.0, None), Event("01job", "running", 1600.0, None)]
    r = gather(job(placement={"site": "gcp", "usd_per_hour": 9.0}), events, None)
    assert r.cost_usd(now=99999.0) == 9.0  # 1000 → 4600 s: one hour, ended
    assert r.started_at == 1600.0 and r.ended_at == 4600.0
    running = gather(job("running", {"usd_per_hour": 9.0}), events, None)
    assert running.ended_at is None and running.cost_usd(now=2800.0) == 4.5
    assert gather(job(placement={"site": "local"}), events, None).cost_usd(5000.0) is None


def test_supervisor_records_give_the_process_span(tmp_path: Path) -> None:
    (tmp_path / "supervisor.json").write_text(json.dumps({"started_at": 1100.5}))
    (tmp_path / "exit.json").write_text(json.dumps({"ended_at": 1200.0}))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    r = gather(job(), [], tmp_path)
    assert (r.started_at, r.ended_at) == (1100.5, 1200.0)
    assert [n.split(" (")[0] for n in r.notes] == ["no GPU samples"]


def test_no_run_folder_is_said_and_the_page_escapes(tmp_path: Path) -> None:
    r = gather(job(), [Event("01job", "failed", 2000.0, {"reason": "<exit 1>"})],
               tmp_path / "gone")  # fmt: skip
    assert r.run_dir is None and "no run folder on this machine" in r.notes[0]
    page = render(r, now=5000.0, images=[])
    assert "<b>demo</b>" not in page and "&lt;b&gt;demo&lt;/b&gt;" in page
    assert "&lt;exit 1&gt;" in page and "No series to plot." in page and "Missing" in page
