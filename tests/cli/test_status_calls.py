"""`torchship status` asks each site once per reconcile, whatever the number of its jobs
(issue 20): counted at the engine's command line, through the whole command.

The engine is a stand-in (no container engine answers in the default suite): an executable
that logs its arguments and answers `ps` and `container inspect` in podman 4.3's formats (the
same records tests/unit/test_batch_status.py reads; real podman answers them in
tests/unit/test_batch_status_e2e.py). TORCHSHIP_ENGINE points the docker site at it.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from torchship.state import JobStore

ENGINE = """#!{python}
import json, sys
from pathlib import Path
here = Path(__file__).parent
with open(here / "calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
containers = json.loads((here / "containers.json").read_text())
if sys.argv[1] == "ps":
    print("\\n".join(c["Id"][:12] for c in containers))
elif sys.argv[1:3] == ["container", "inspect"]:
    wanted = set(sys.argv[3:])
    print(json.dumps([c for c in containers if c["Id"][:12] in wanted]))
else:
    sys.exit(125)
"""


def _container(n: int, job_id: str, running: bool) -> dict[str, object]:
    state = {"Status": "running", "Running": True, "ExitCode": 0, "FinishedAt": ""} if running \
        else {"Status": "exited", "Running": False, "ExitCode": n % 2,
              "FinishedAt": "2026-11-30T10:00:00.000000000Z"}  # fmt: skip
    labels = {"io.torchship.job-id": job_id}
    return {"Id": f"{n + 1:012x}" + "ab" * 26, "Config": {"Labels": labels}, "State": state}


@pytest.mark.parametrize("jobs", [1, 40])
def test_status_asks_the_engine_twice_whatever_the_number_of_jobs(
    tmp_path: Path, jobs: int
) -> None:
    engine = tmp_path / "engine"
    engine.write_text(ENGINE.format(python=sys.executable))
    engine.chmod(0o755)
    containers, ids = [], []
    with JobStore(tmp_path / "home" / "jobs.db") as store:
        for i in range(jobs + 5):
            job, _ = store.submit(f"k{i}", f"job{i}", {}, site="docker")
            handle = f"docker://{socket.gethostname()}/{job.id}"
            if i < jobs:  # running on the site, or ended there
                store.transition(job.id, "running", handle=handle)
                containers.append(_container(i, job.id, running=i % 3 == 0))
            else:  # finished long ago: not asked about
                store.transition(job.id, "succeeded", handle=handle, exit_code=0)
            ids.append(job.id)
    (tmp_path / "containers.json").write_text(json.dumps(containers))
    env = {"TORCHSHIP_HOME": str(tmp_path / "home"), "TORCHSHIP_ENGINE": str(engine),
           "TORCHSHIP_SITES": str(tmp_path / "no-sites.toml")}  # fmt: skip
    listed = run_cli("status", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["ps", "container"], calls
    states = {j["id"]: j["state"] for j in json.loads(listed.stdout)}
    want = {ids[i]: "running" if i % 3 == 0 else ("succeeded", "failed")[i % 2]
            for i in range(jobs)}  # fmt: skip
    assert {i: states[i] for i in want} == want
    again = run_cli("status", env=env)  # nothing active is left unfinished but the running
    assert again.returncode == 0, again.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 4, calls
