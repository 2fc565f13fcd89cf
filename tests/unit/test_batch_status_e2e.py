"""`statuses` of the docker site on a real engine: podman here (tests/podman_env.py installs it,
with runc, and imports its Debian base image), containers in every state the site reads, two
engine calls for all of them, and for each exactly what `status` says of it alone."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.podman_env import BASE, ENGINE_ARGS, base_image, install_tools, sh
from tests.unit.test_batch_status import same
from torchship.backends.base import SiteStatus
from torchship.backends.docker import LABEL_JOB, DockerBackend, DockerOptions

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_docker_batch_on_podman_says_what_status_says(tmp_path: Path) -> None:
    why = install_tools(("podman", "runc")) or base_image()
    if why:
        pytest.skip(f"no podman here: {why}")
    tag = uuid.uuid4().hex[:8]  # this run's jobs; other runs' torchship containers are listed too
    label = f"io.torchship.test-run={tag}"
    commands = {"ok": ["true"], "fail": ["sh", "-c", "exit 3"], "live": ["sleep", "300"],
                "stopped": ["sleep", "300"]}  # fmt: skip
    try:
        for name, command in commands.items():
            sh("podman", "run", "--detach", *ENGINE_ARGS, "--network=none", "--label", label,
               "--label", f"{LABEL_JOB}={name}-{tag}", BASE, *command)  # fmt: skip
        sh("podman", "create", *ENGINE_ARGS, "--network=none", "--label", label,
           "--label", f"{LABEL_JOB}=new-{tag}", BASE, "true")  # fmt: skip
        sh("podman", "stop", "--time", "1", *_ids(label, f"stopped-{tag}"))
        sh("podman", "wait", *_ids(label, f"ok-{tag}"), *_ids(label, f"fail-{tag}"))
        calls: list[list[str]] = []

        def runner(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
            calls.append(argv)
            return subprocess.run(argv, **kw)  # noqa: PLW1510 (the backend passes check=False)

        opts = DockerOptions(engine="podman", home=tmp_path, host="box", uid=1000, gid=1000)
        be = DockerBackend(opts, runner)
        jobs = ["ok", "fail", "live", "stopped", "new", "lost"]
        handles = [f"docker://box/{j}-{tag}" for j in jobs] + [f"docker://far/ok-{tag}"]
        batch = be.statuses(handles)
        assert [c[1] for c in calls] == ["ps", "container"]
        same(batch, be.status, handles)
    finally:
        ids = sh("podman", "ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
        if ids:
            sh("podman", "rm", "--force", "--time", "0", *ids, check=False)
    got = [(s.state, s.exit_code) for s in batch.values() if isinstance(s, SiteStatus)]
    assert got[:3] == [("succeeded", 0), ("failed", 3), ("running", None)]
    assert got[3][0] == "cancelled"  # sleep as PID 1 ignores SIGTERM: 137 after the grace time
    assert got[4:] == [("pending", None), ("lost", None)]


def _ids(label: str, job_id: str) -> list[str]:
    out = sh("podman", "ps", "-aq", "--filter", f"label={label}", "--filter",
             f"label={LABEL_JOB}={job_id}").stdout.split()  # fmt: skip
    assert len(out) == 1, (job_id, out)
    return out
