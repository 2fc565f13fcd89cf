"""benchmarks/scale_startup.py replays a lock's uv calls alone as the baseline of what the lock
adds: the calls it finished, grouped as it ran them. A call it killed (to start it again with
the checked lock's pins) would otherwise be run to its end and inflate the baseline."""

from __future__ import annotations

import importlib.util
from typing import Any

from tests.conftest import REPO

# loaded from its file: benchmarks/ is not put on sys.path, where its modules' names could
# shadow others' for the rest of the session
_SPEC = importlib.util.spec_from_file_location(
    "scale_startup", REPO / "benchmarks/scale_startup.py"
)
assert _SPEC is not None and _SPEC.loader is not None
scale_startup = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(scale_startup)


def _call(start: float, end: float, code: int = 0) -> dict[str, Any]:
    return {"start": start, "end": end, "argv": ["uv"], "stdin": "", "files": {}, "env": {},
            "code": code}  # fmt: skip


def test_the_replay_groups_calls_as_the_lock_ran_them_and_drops_the_killed() -> None:
    killed = _call(0.0, 0.1, code=-9)
    primary = _call(0.1, 0.5)
    cpu, aarch64 = _call(0.6, 0.9), _call(0.61, 1.0)  # compile_all: side by side
    last = _call(1.2, 1.3)
    groups = scale_startup._side_by_side([aarch64, killed, last, primary, cpu])
    assert groups == [[primary], [cpu, aarch64], [last]]
