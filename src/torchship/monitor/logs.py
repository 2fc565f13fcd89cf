"""Job logs as text for people, or as one JSON object per line for Loki and ELK.

`TORCHSHIP_LOG_FORMAT=json` (set by the Kubernetes and SkyPilot sites, or in a job's
[job.env]) turns every line the workload and the supervisor print into an object with fixed
keys, so a log pipeline needs no parsing rules:

    {"ts": "2026-11-22T10:04:05.123Z", "level": "info", "logger": "torchship.workload",
     "job": "20261122-100400-ab12", "rank": 0, "local_rank": 0, "host": "node-3",
     "event": "step", "msg": "step 10/60 · loss 5.1234 …", "step": 10, "loss": 5.1234, …}

`job`, `rank`, `local_rank` and `host` come from the environment torchrun and torchship set
(TORCHSHIP_JOB_ID, RANK, LOCAL_RANK); a process outside a job has `job` "" and `rank` null.
Event fields are numbers or strings; a NaN or infinite float is written as null (JSON has
neither), so one bad loss never makes a line unparseable.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from torchship.conventions import JOB_ID_ENV, LOG_FORMAT_ENV

FORMAT_ENV = LOG_FORMAT_ENV
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
RESERVED = ("ts", "level", "logger", "job", "rank", "local_rank", "host", "event", "msg")


def log_format(env: Mapping[str, str] | None = None) -> str:
    """ "json" or "text" (the default, and what anything unrecognised means)."""
    value = (os.environ if env is None else env).get(FORMAT_ENV, "text").strip().lower()
    return value if value in FORMATS else "text"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def record(
    logger: str,
    msg: str,
    event: str = "message",
    level: str = "info",
    env: Mapping[str, str] | None = None,
    now: float | None = None,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object for one line (pure but for the clock and environment it is given)."""
    e = os.environ if env is None else env
    ts = datetime.fromtimestamp(now if now is not None else _time(), UTC)
    out: dict[str, Any] = {
        "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
        "level": level if level in LEVELS else "info",
        "logger": logger,
        "job": e.get(JOB_ID_ENV, ""),
        "rank": _int_or_none(e.get("RANK")),
        "local_rank": _int_or_none(e.get("LOCAL_RANK")),
        "host": e.get("HOSTNAME") or socket.gethostname(),
        "event": event,
        "msg": msg,
    }
    for key, value in (fields or {}).items():
        out[key if key not in RESERVED else f"field_{key}"] = _clean(value)
    return out


def _time() -> float:
    import time

    return time.time()


def emit(
    logger: str,
    prefix: str,
    msg: str,
    event: str = "message",
    level: str = "info",
    stream: IO[str] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """One line: `prefix msg` as text, or record(...) as JSON (TORCHSHIP_LOG_FORMAT)."""
    out = stream or sys.stdout
    if log_format() == "json":
        line = json.dumps(record(logger, msg, event, level, fields=fields), ensure_ascii=False)
    else:
        line = f"{prefix} {msg}"
    out.write(line + "\n")  # one write: lines from several ranks on one pipe never interleave
    out.flush()
