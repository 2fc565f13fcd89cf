"""The workload's telemetry without torch: JSON log lines (fixed keys, job id and rank from the
environment, never unparseable) and the training series over real HTTP."""

from __future__ import annotations

import io
import json
import math
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.prom import samples, scrape
from torchship.monitor import logs
from torchship.monitor.training import TrainingMetrics, port_from_env

ENV = {"TORCHSHIP_JOB_ID": "j-7", "RANK": "3", "LOCAL_RANK": "1", "HOSTNAME": "node-2"}


def test_record_carries_job_rank_and_event_fields() -> None:
    r = logs.record("torchship.workload", "step 10", "step", env=ENV, now=0.25,
                    fields={"step": 10, "loss": 2.5})  # fmt: skip
    assert r == {
        "ts": "1970-01-01T00:00:00.250Z", "level": "info", "logger": "torchship.workload",
        "job": "j-7", "rank": 3, "local_rank": 1, "host": "node-2", "event": "step",
        "msg": "step 10", "step": 10, "loss": 2.5,
    }  # fmt: skip


def test_record_outside_a_job_and_reserved_or_odd_fields() -> None:
    odd = {"job": "mine", "nan": math.nan, "inf": -math.inf, "obj": object, "ok": None}
    r = logs.record("x", "m", env={"RANK": "not-a-number"}, now=0, fields=odd)
    assert r["job"] == "" and r["rank"] is None and r["local_rank"] is None
    assert r["field_job"] == "mine"  # a field never overwrites the fixed keys
    assert r["nan"] is None and r["inf"] is None and r["ok"] is None
    assert r["obj"] == str(object)
    assert logs.record("x", "m", level="loud", env={}, now=0)["level"] == "info"


@given(
    msg=st.text(),
    fields=st.dictionaries(
        st.text(min_size=1),
        st.one_of(st.floats(), st.integers(), st.text(), st.booleans(), st.none()),
    ),
)
def test_every_record_is_one_line_of_strict_json(msg: str, fields: dict[str, object]) -> None:
    line = json.dumps(logs.record("t", msg, env=ENV, now=1.0, fields=fields), ensure_ascii=False)
    assert "\n" not in line
    back = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert back["msg"] == msg and back["job"] == "j-7"


def test_emit_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    logs.emit("t", "[p]", "hello", stream=out, fields={"step": 1})
    monkeypatch.setenv(logs.FORMAT_ENV, "JSON")
    logs.emit("t", "[p]", "hello", "step", stream=out, fields={"step": 1})
    monkeypatch.setenv(logs.FORMAT_ENV, "yaml")  # unknown: text
    logs.emit("t", "[p]", "again", stream=out)
    first, second, third = out.getvalue().splitlines()
    assert first == "[p] hello" and third == "[p] again"
    assert json.loads(second)["event"] == "step" and json.loads(second)["step"] == 1


def test_port_from_env() -> None:
    assert port_from_env({}) is None and port_from_env({"TORCHSHIP_METRICS_PORT": " "}) is None
    assert port_from_env({"TORCHSHIP_METRICS_PORT": "9402"}) == 9402
    for bad in ("nine", "70000", "-1"):
        with pytest.raises(ValueError, match="is not a TCP port"):
            port_from_env({"TORCHSHIP_METRICS_PORT": bad})


def test_training_series_over_http() -> None:
    tm = TrainingMetrics("j-7", 0)
    served = tm.serve(0, "127.0.0.1")
    assert served is not None
    try:
        tm.describe_run(device="cpu", backend="gloo", amp="off", compile="off", world_size=2,
                        torch="2.13.0+cpu")  # fmt: skip
        tm.set(step=20, steps_target=60, loss=3.5, grad_norm=0.75, learning_rate=1e-3,
               tokens_per_second=1234.5, mfu=None)  # fmt: skip
        for s in (0.02, 0.03, 0.2):
            tm.observe_step(s, 512)
        got = samples(scrape(served.port))
    finally:
        tm.close()
    one = {"torchship_job": "j-7", "rank": "0"}
    for name, value in (("torchship_train_step", 20), ("torchship_train_steps_target", 60),
                        ("torchship_train_loss", 3.5), ("torchship_train_grad_norm", 0.75),
                        ("torchship_train_tokens_per_second", 1234.5),
                        ("torchship_train_tokens_total", 1536),
                        ("torchship_train_step_seconds_count", 3)):  # fmt: skip
        assert got[name] == [(one, value)], name
    assert got["torchship_train_mfu"] == [(one, 0.0)]  # never set: None left it alone
    buckets = {lab["le"]: v for lab, v in got["torchship_train_step_seconds_bucket"]}
    assert buckets["0.025"] == 1 and buckets["0.25"] == 3 and buckets["+Inf"] == 3
    (info, value), = got["torchship_train_info"]  # fmt: skip
    assert value == 1 and info["world_size"] == "2" and info["backend"] == "gloo"


def test_a_taken_port_turns_metrics_off_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert TrainingMetrics("j", 0).serve(port, "127.0.0.1") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and "TORCHSHIP_METRICS_PORT" in err[0]
