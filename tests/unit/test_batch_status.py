"""`statuses`: many jobs of one site in a fixed number of calls to it (issue 20, item 2), and
for every job exactly what `status` says of it alone.

Each kind is driven through the seam its backend already takes (the runner of engine, Slurm
and `sky` commands; tests/unit/test_batch_status_k8s.py drives the Kubernetes client against
the stand-in API server), and the calls are counted there: for 1, 10 and 100 jobs the count
is the same. The outputs are the real tools': podman 4.3's `.State` of real containers, Slurm's
squeue/scontrol/sacct formats, SkyPilot 0.14's `sky queue -o json` (tests/fake_sky.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from torchship.backends.base import SiteStatus, one_by_one
from torchship.backends.docker import CANCELLED, LABEL_JOB, DockerBackend, DockerOptions
from torchship.backends.slurm import ENDED
from torchship.errors import TorchshipError, UsageError

Outcome = SiteStatus | TorchshipError


def same(batch: Mapping[str, Outcome], one: Callable[[str], SiteStatus],
         handles: Sequence[str]) -> None:  # fmt: skip
    """Every handle's entry is what `status` says of it alone: the same SiteStatus, or an
    error of the same type and message."""
    assert set(batch) == set(handles)
    for h in handles:
        try:
            alone: Outcome = one(h)
        except TorchshipError as e:
            alone = e
        got = batch[h]
        if isinstance(alone, TorchshipError):
            assert isinstance(got, type(alone)), (h, got)
            assert (got.message, got.hint) == (alone.message, alone.hint)
        else:
            assert got == alone, h


def proc(
    argv: list[str], out: str = "", rc: int = 0, err: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(argv, rc, out, err)


# --- docker (and podman) ------------------------------------------------------------------------

# `.State` of real containers, as `podman inspect --format '{{json .State}}'` (podman 4.3.1,
# runc) printed it here: `create` …true, `run` sleep 300, `run` true, `run` sleep 300 then
# `stop --time 2` (tini passes SIGTERM on: 143), `run` sh -c 'exit 3'
_STATE = {"OciVersion": "1.0.2-dev", "Running": False, "Paused": False, "Restarting": False,
          "OOMKilled": False, "Dead": False, "Pid": 0, "Error": "",
          "StartedAt": "2026-11-30T13:16:57.127065889Z",
          "FinishedAt": "2026-11-30T13:16:57.129998233Z",
          "Health": {"Status": "", "FailingStreak": 0, "Log": None},
          "CheckpointedAt": "0001-01-01T00:00:00Z",
          "RestoredAt": "0001-01-01T00:00:00Z"}  # fmt: skip
CREATED = _STATE | {"Status": "created", "ExitCode": 0, "StartedAt": "0001-01-01T00:00:00Z",
                    "FinishedAt": "0001-01-01T00:00:00Z"}  # fmt: skip
RUNNING = _STATE | {"Status": "running", "Running": True, "Pid": 8552, "ConmonPid": 8541,
                    "ExitCode": 0, "FinishedAt": "0001-01-01T00:00:00Z"}  # fmt: skip
EXITED_0 = _STATE | {"Status": "exited", "ExitCode": 0}
STOPPED = _STATE | {"Status": "exited", "ExitCode": 143}
EXITED_3 = _STATE | {"Status": "exited", "ExitCode": 3}
EXITED_1 = _STATE | {"Status": "exited", "ExitCode": 1}  # torchrun after `torchship cancel`


@dataclasses.dataclass
class Container:
    job_id: str
    state: dict[str, Any]
    id: str = ""  # 64 hex digits, made from the job id when not given

    def __post_init__(self) -> None:
        self.id = self.id or hashlib.sha256(f"{self.job_id}#{next(_SERIAL)}".encode()).hexdigest()


_SERIAL = itertools.count()


class Engine:
    """podman on this machine, for the commands the docker site sends: `ps -a --filter
    label=…` (IDs cut to 12 digits, newest first), `inspect --format {{json .State}}`, and
    `container inspect ID…` (a JSON array; a missing ID makes it exit 125, as podman does,
    with the others still printed). Every call is recorded: the count is the site's."""

    def __init__(self, containers: Sequence[Container], engine: str = "podman") -> None:
        self.containers = list(containers)  # newest first
        self.engine = engine
        self.calls: list[list[str]] = []
        self.gone: set[str] = set()  # removed between `ps` and `inspect`

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        assert argv[0] == self.engine
        if argv[1] == "ps":
            key, _, value = argv[argv.index("--filter") + 1].removeprefix("label=").partition("=")
            ids = [c.id[:12] for c in self.containers
                   if key == LABEL_JOB and (not value or c.job_id == value)]  # fmt: skip
            return proc(argv, "".join(f"{i}\n" for i in ids))
        if argv[1] == "inspect":  # status: one container, its .State
            c = self._find(argv[-1])
            return proc(argv, json.dumps(c.state) + "\n") if c else proc(argv, "", 125, "Error")
        assert argv[1:3] == ["container", "inspect"], argv
        found = [(i, self._find(i)) for i in argv[3:]]
        records = [{"Id": c.id, "Config": {"Labels": {LABEL_JOB: c.job_id}}, "State": c.state}
                   for _, c in found if c is not None]  # fmt: skip
        missing = [i for i, c in found if c is None]
        err = "".join(f"Error: inspecting object: no such container {i}\n" for i in missing)
        return proc(argv, json.dumps(records, indent=5) + "\n", 125 if missing else 0, err)

    def _find(self, short: str) -> Container | None:
        return next((c for c in self.containers
                     if c.id.startswith(short) and c.id not in self.gone), None)  # fmt: skip


def docker(tmp_path: Path, engine: Engine) -> DockerBackend:
    opts = DockerOptions(engine=engine.engine, home=tmp_path, host="box", uid=1000, gid=1000)
    return DockerBackend(opts, engine)


def test_docker_batch_says_what_status_says_of_each(tmp_path: Path) -> None:
    engine = Engine([
        Container("j-run", RUNNING), Container("j-ok", EXITED_0), Container("j-fail", EXITED_3),
        Container("j-stop", STOPPED), Container("j-cancel", EXITED_1),
        Container("j-new", CREATED), Container("j-twice", RUNNING),
        Container("j-twice", EXITED_3),  # an older container of the same job: the newest counts
        Container("not-asked", RUNNING),
    ])  # fmt: skip
    (tmp_path / "runs/j-cancel").mkdir(parents=True)
    (tmp_path / f"runs/j-cancel/{CANCELLED}").write_text("1.0\n")  # `torchship cancel` was here
    jobs = ["j-run", "j-ok", "j-fail", "j-stop", "j-cancel", "j-new", "j-twice", "j-lost"]
    handles = [f"docker://box/{j}" for j in jobs]
    handles += ["docker://elsewhere/j-run", "docker://box", "docker://box/j-ok"]  # repeated
    be = docker(tmp_path, engine)
    batch = be.statuses(handles)
    assert len(engine.calls) == 2
    same(batch, be.status, handles)
    states = {h: (s.state, s.exit_code) for h, s in batch.items() if isinstance(s, SiteStatus)}
    assert list(states.values()) == [("running", None), ("succeeded", 0), ("failed", 3),
                                     ("cancelled", 143), ("cancelled", 1), ("pending", None),
                                     ("running", None), ("lost", None)]  # fmt: skip
    assert isinstance(batch["docker://elsewhere/j-run"], UsageError)
    assert "not on this machine" in batch["docker://elsewhere/j-run"].message
    assert isinstance(batch["docker://box"], UsageError)


@pytest.mark.parametrize("engine_name", ["docker", "podman"])
def test_docker_batch_is_two_engine_calls_whatever_the_number(
    tmp_path: Path, engine_name: str
) -> None:
    states = [RUNNING, EXITED_0, EXITED_3, STOPPED, CREATED]
    for n in (1, 10, 100):
        engine = Engine([Container(f"j{i}", states[i % 5]) for i in range(n)], engine_name)
        be = docker(tmp_path, engine)
        handles = [f"docker://box/j{i}" for i in range(n)] + ["docker://box/gone"]
        batch = be.statuses(handles)
        assert len(engine.calls) == 2, n  # one `ps`, one `container inspect`
        assert engine.calls[0] == [engine_name, "ps", "-a", "--filter", f"label={LABEL_JOB}",
                                   "--format", "{{.ID}}"]  # fmt: skip
        assert engine.calls[1][:2] == [engine_name, "container"] and len(engine.calls[1]) == n + 3
        assert batch["docker://box/gone"] == SiteStatus(
            "lost", reason=f"no container labelled {LABEL_JOB}=gone"
        )
        engine.calls.clear()
        one_by_one(be, handles)
        assert len(engine.calls) == 2 * n + 1  # what `status` costs: `ps` and `inspect` each
    empty = Engine([])
    assert docker(tmp_path, empty).statuses(["docker://box/a", "docker://box/b"]) == {
        h: SiteStatus("lost", reason=f"no container labelled {LABEL_JOB}={h[-1]}")
        for h in ("docker://box/a", "docker://box/b")
    }
    assert len(empty.calls) == 1  # no container: no inspect
    assert docker(tmp_path, empty).statuses(["docker://far/a"]) and len(empty.calls) == 1


def test_docker_a_container_removed_between_ps_and_inspect_is_lost(tmp_path: Path) -> None:
    engine = Engine([Container("a", RUNNING), Container("b", EXITED_0)])
    engine.gone.add(engine.containers[0].id)  # `rm` came between the two calls
    batch = docker(tmp_path, engine).statuses(["docker://box/a", "docker://box/b"])
    assert batch["docker://box/a"] == SiteStatus(
        "lost", reason=f"no container labelled {LABEL_JOB}=a"
    )
    assert batch["docker://box/b"] == SiteStatus("succeeded", 0)


def test_docker_an_engine_that_cannot_be_asked_raises_once(tmp_path: Path) -> None:
    def missing(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    opts = DockerOptions(engine="docker", home=tmp_path, host="box", uid=1, gid=1)
    with pytest.raises(TorchshipError) as e:
        DockerBackend(opts, missing).statuses(["docker://box/a", "docker://box/b"])
    assert "cannot run docker: No such file or directory" in e.value.message
    assert "install docker or podman" in e.value.hint

    def down(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        err = (
            'Error: unable to connect to Podman socket: Get "http://d/v4.3.1/libpod/_ping": '
            "dial unix /run/podman/podman.sock: connect: no such file or directory\n"
        )
        return proc(argv, "", 125, err)

    opts = dataclasses.replace(opts, engine="podman")
    with pytest.raises(TorchshipError) as e:
        DockerBackend(opts, down).statuses(["docker://box/a"])
    assert e.value.message.startswith("podman ps failed: Error: unable to connect to Podman")
    assert e.value.hint == "check that the engine runs: `podman ps`"


# --- slurm --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    state: str  # Slurm's JobState
    reason: str = "None"
    queued: bool = True  # slurmctld still holds it (squeue, scontrol show job)
    accounted: bool = True  # slurmdbd has it (sacct)


class Slurm:
    """A login node over SSH, for the commands the Slurm site sends: squeue, scontrol show job
    and sacct answer from `jobs` in their real formats (squeue `-o` fields, ended jobs only
    with `-t all`; scontrol's `JobState=… Reason=…` lines; sacct `-P` rows; an unknown single
    id is squeue's and scontrol's "Invalid job id specified", exit 1), as slurm-wlm 22.05 does
    in tests/integration/test_slurm.py; anything else (cat, sh) really runs here, on the run
    folders the test wrote. Every command is recorded: the count is the site's."""

    def __init__(self, jobs: Mapping[str, SlurmJob], accounting: bool = True) -> None:
        self.jobs = dict(jobs)
        self.accounting = accounting
        self.reachable = True
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "hpc-login", "--"], argv
        if not self.reachable:
            return proc(argv, "", 255, "ssh: connect to host hpc-login port 22: Connection "
                        "refused\r\n")  # fmt: skip
        inner = shlex.split(argv[5])
        answer = {"squeue": self.squeue, "scontrol": self.scontrol, "sacct": self.sacct}
        if inner[0] in answer:
            return answer[inner[0]](inner)
        return subprocess.run(inner, capture_output=True, text=True, check=False, timeout=30)

    def _ids(self, argv: list[str]) -> list[str]:
        return argv[argv.index("-j") + 1].split(",")

    def squeue(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        ids, fmt = self._ids(argv), argv[argv.index("-o") + 1]
        every = "-t" in argv and argv[argv.index("-t") + 1] == "all"
        known = [i for i in ids if i in self.jobs and self.jobs[i].queued
                 and (every or self.jobs[i].state.split()[0] not in ENDED)]  # fmt: skip
        if len(ids) == 1 and not known:  # squeue.c: one id is asked for, the others filtered
            return proc(argv, "", 1, "slurm_load_jobs error: Invalid job id specified\n")
        rows = [fmt.replace("%A", i).replace("%T", self.jobs[i].state)
                .replace("%r", self.jobs[i].reason) for i in known]  # fmt: skip
        return proc(argv, "".join(f"{r}\n" for r in rows))

    def scontrol(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        i = argv[-1]
        job = self.jobs.get(i)
        if job is None or not job.queued:
            return proc(argv, "", 1, "slurm_load_jobs error: Invalid job id specified\n")
        return proc(argv, f"JobId={i} JobName=finetune\n   UserId=me(1000) GroupId=me(1000) "
                    "MCS_label=N/A\n   Priority=4294901757 Nice=0 Account=ml-team QOS=normal\n"
                    f"   JobState={job.state} Reason={job.reason} Dependency=(null)\n"
                    "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0\n")  # fmt: skip

    def sacct(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if not self.accounting:
            return proc(argv, "", 1, "sacct: error: Slurm accounting storage is disabled\n")
        fields = argv[argv.index("-o") + 1].split(",")
        rows = []
        for i in self._ids(argv):
            job = self.jobs.get(i)
            if job is not None and job.accounted:
                rows.append("|".join(i if f == "JobID" else job.state for f in fields))
        return proc(argv, "".join(f"{r}\n" for r in rows))


def slurm_jobs(runs: Path) -> tuple[dict[str, SlurmJob], dict[str, str | None]]:
    """A job of every kind the site can report, by Slurm id, and what each left in its run
    folder (exit.json as the batch script or `torchship cancel` writes it; None: nothing)."""
    ok = '{"state": "succeeded", "exit_code": 0, "ended_at": 1764500000}\n'
    failed = '{"state": "failed", "exit_code": 3, "ended_at": 1764500100}\n'
    cancel = ('{"state": "cancelled", "exit_code": null, "ended_at": 1764500200.5, '
              '"reason": "cancelled with scancel"}\n')  # fmt: skip
    table = {
        "101": (SlurmJob("RUNNING"), None),
        "102": (SlurmJob("PENDING", "Resources"), None),
        "103": (SlurmJob("COMPLETING"), ok),  # the script has written its end; Slurm has not
        "104": (SlurmJob("COMPLETED"), ok),  # still in slurmctld's table (MinJobAge)
        "105": (SlurmJob("FAILED", queued=False), failed),
        "106": (SlurmJob("CANCELLED", queued=False), cancel),
        "107": (SlurmJob("TIMEOUT", queued=False), None),  # killed before the script ended
        "108": (SlurmJob("CANCELLED by 0", queued=False), None),
        "109": (SlurmJob("NODE_FAIL"), None),
        "110": (SlurmJob("PENDING", "BeginTime"), failed),  # requeued after a failed attempt
        "111": (SlurmJob("COMPLETED", queued=False), "{not json"),
        "112": (SlurmJob("COMPLETED", queued=False, accounted=False), None),  # lost
    }
    for sid, (_, record) in table.items():
        (runs / f"j{sid}").mkdir(parents=True, exist_ok=True)
        if record is not None:
            (runs / f"j{sid}/exit.json").write_text(record)
    return {sid: job for sid, (job, _) in table.items()}, {s: r for s, (_, r) in table.items()}


def slurm_handle(runs: Path, sid: str) -> str:
    from torchship.backends.slurm import SlurmSiteOptions, make_handle

    return make_handle(SlurmSiteOptions(login="hpc-login", runs_dir=str(runs)), f"j{sid}", sid)


def test_slurm_batch_says_what_status_says_of_each(tmp_path: Path) -> None:
    from torchship.backends.slurm import SlurmBackend

    jobs, _ = slurm_jobs(tmp_path / "runs")
    jobs["113"] = SlurmJob("FAILED", "NonZeroExitCode")  # ended, no record: Slurm's reason
    (tmp_path / "runs/j113").mkdir()
    handles = [slurm_handle(tmp_path / "runs", sid) for sid in jobs]
    handles += [
        "slurm://hpc-login/x?id=1;rm&runs=%2Fr",
        "slurm://-oProxyCommand=x/j?id=1&runs=%2Fr",
    ]
    for accounting in (True, False):
        site = Slurm(jobs, accounting)
        be = SlurmBackend(None, runner=site)
        batch = be.statuses(handles)
        assert len(site.calls) == 3  # squeue, the exit records, sacct
        same(batch, be.status, handles)
    got = {h.split("?id=")[1][:3]: (s.state, s.exit_code, s.reason, s.ended_at)
           for h, s in batch.items() if isinstance(s, SiteStatus)}  # fmt: skip
    assert got["101"] == ("running", None, "", None)
    assert got["102"] == ("pending", None, "Slurm: PENDING (Resources)", None)
    assert got["103"][0] == "running" and got["110"][0] == "pending"  # Slurm's word first
    assert got["104"] == ("succeeded", 0, "", 1764500000)
    assert got["105"] == ("failed", 3, "the job exited 3 on the cluster", 1764500100)
    assert got["106"][0::3] == ("cancelled", 1764500200.5)
    assert got["109"] == ("failed", None, "Slurm: NODE_FAIL", None)
    assert got["112"][0] == "lost"
    assert got["113"] == ("failed", None, "Slurm: FAILED (NonZeroExitCode)", None)
    errors = [s for s in batch.values() if isinstance(s, TorchshipError)]
    assert len(errors) == 2 and all("is not a Slurm handle" in e.message for e in errors)


def test_slurm_batch_is_three_commands_whatever_the_number(tmp_path: Path) -> None:
    from torchship.backends.slurm import SlurmBackend

    kinds, _ = slurm_jobs(tmp_path / "kinds")
    for n in (1, 10, 100):
        runs = tmp_path / f"runs{n}"
        jobs, handles = {}, []
        for i in range(n):  # the kinds in turn; the last one always lost: all three commands
            sid = str(1000 + i)
            jobs[sid] = list(kinds.values())[i % len(kinds)] if i < n - 1 else kinds["112"]
            (runs / f"j{sid}").mkdir(parents=True)
            handles.append(slurm_handle(runs, sid))
        site = Slurm(jobs)
        be = SlurmBackend(None, runner=site)
        batch = be.statuses(handles)
        assert [shlex.split(c[5])[0] for c in site.calls] == ["squeue", "sh", "sacct"], n
        assert shlex.split(site.calls[0][5])[5] == ",".join(sorted(jobs))  # one squeue, all ids
        assert batch[handles[-1]].state == "lost"  # type: ignore[union-attr]
        site.calls.clear()
        one_by_one(be, handles)
        assert len(site.calls) >= 2 * n  # what `status` costs: two to four commands a job


def test_slurm_ids_and_paths_go_in_commands_of_bounded_length() -> None:
    from torchship.backends.slurm import ARGV_BUDGET, chunks

    ids = [str(10_000_000 + i) for i in range(20_000)]  # 8 digits: 9 characters with the comma
    runs = list(chunks(ids))
    assert [len(r) for r in runs] == [7281, 7281, 5438]
    assert all(len(",".join(r)) <= ARGV_BUDGET for r in runs)
    assert [i for r in runs for i in r] == ids
    assert list(chunks(ids[:500])) == [ids[:500]]  # a usual batch: one command
    assert list(chunks([])) == []


def test_slurm_a_login_node_that_cannot_be_asked_raises_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchship.backends.slurm import SlurmBackend

    jobs, _ = slurm_jobs(tmp_path / "runs")
    site = Slurm(jobs)
    site.reachable = False
    handles = [slurm_handle(tmp_path / "runs", sid) for sid in jobs]
    with pytest.raises(UsageError) as e:
        SlurmBackend(None, runner=site).statuses(handles)
    assert e.value.message == ("squeue on hpc-login failed: ssh: connect to host hpc-login port "
                               "22: Connection refused")  # fmt: skip
    assert e.value.hint == "check that hpc-login answers: `ssh hpc-login squeue`"
    assert len(site.calls) == 1
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    here = handles[0].replace("slurm://hpc-login/", "slurm://localhost/")
    with pytest.raises(UsageError, match="`squeue` is not installed here"):
        SlurmBackend(None, runner=site).statuses([here])


# --- skypilot -----------------------------------------------------------------------------------


class Counted:
    """The runner the SkyPilot backend takes, running the command for real (here `sky` is
    tests/fake_sky.py: SkyPilot 0.14's `queue -o json`, several clusters in one call), each
    call recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        return subprocess.run(argv, **kw)  # noqa: PLW1510 (the backend passes check=False)


@pytest.fixture
def sky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tests/fake_sky.py as `sky`, its clusters in FAKE_SKY_HOME."""
    import sys

    from tests.conftest import REPO

    script = tmp_path / "bin/sky"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                      f"{shlex.quote(str(REPO / 'tests/fake_sky.py'))} \"$@\"\n")  # fmt: skip
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_SKY_HOME", str(tmp_path / "sky-home"))
    return script


def sky_cluster(home: Path, name: str, *statuses: str) -> None:
    """A cluster as tests/fake_sky.py keeps it, its jobs in SkyPilot's ClusterJobRecord shape."""
    jobs = [{"job_id": i + 1, "job_name": "t", "username": "me", "user_hash": "abcd1234",
             "submitted_at": 1764500000.0, "start_at": None, "end_at": None,
             "resources": "1x[CPU:1+]", "status": st, "log_path": "/tmp/x", "metadata": {},
             "links": {}} for i, st in enumerate(statuses)]  # fmt: skip
    path = home / "clusters" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "status": "UP", "to_down": True, "jobs": jobs,
                                "skylet": None}))  # fmt: skip


def sky_jobs(ts_home: Path, sky_home: Path) -> list[str]:
    """One job of every kind the SkyPilot site can report; their handles."""
    import os
    import time

    ended = {"ok": {"state": "succeeded", "exit_code": 0},
             "f100": {"state": "failed", "exit_code": 100},
             "f1": {"state": "failed", "exit_code": 1},
             "stop": {"state": "cancelled", "exit_code": None,
                      "reason": "cancelled; cluster down"}}  # fmt: skip
    on_cluster = {"run": ("RUNNING",), "wait": ("SETTING_UP",), "done": ("SUCCEEDED",),
                  "setup": ("FAILED_SETUP",), "gone-soon": ("CANCELLED",),
                  "again": ("FAILED", "RUNNING")}  # fmt: skip
    for job_id in [*ended, *on_cluster, "launching", "lost"]:
        (ts_home / "runs" / job_id).mkdir(parents=True)
    for job_id, record in ended.items():
        (ts_home / f"runs/{job_id}/exit.json").write_text(json.dumps(record))
    (ts_home / "runs/f1/log").write_text("sky.exceptions.ResourcesUnavailableError: no A100\n")
    for job_id, statuses in on_cluster.items():
        sky_cluster(sky_home, f"ts-{job_id}", *statuses)
    old = time.time() - 3600  # launched an hour ago; its client died without a record
    for job_id in [*on_cluster, "lost"]:
        os.utime(ts_home / "runs" / job_id, (old, old))
    ids = [*ended, *on_cluster, "launching", "lost"]
    return [f"sky://ts-{j}/{j}" for j in ids] + ["sky://prod-serving/x", "sky://ts-a"]


def test_skypilot_batch_says_what_status_says_of_each(tmp_path: Path, sky: Path) -> None:
    from torchship.backends.skypilot import SkyPilotBackend

    handles = sky_jobs(tmp_path / "ts", tmp_path / "sky-home")
    runner = Counted()
    be = SkyPilotBackend(None, tmp_path / "ts", str(sky), runner=runner)
    batch = be.statuses(handles)
    assert len(runner.calls) == 1
    clusters = runner.calls[0][runner.calls[0].index("json") + 1 :]
    assert clusters == sorted(f"ts-{j}" for j in ("run", "wait", "done", "setup", "gone-soon",
                                                  "again", "launching", "lost"))  # fmt: skip
    same(batch, be.status, handles)
    got = {h: (s.state, s.exit_code) for h, s in batch.items() if isinstance(s, SiteStatus)}
    assert list(got.values()) == [
        ("succeeded", 0), ("failed", 1), ("failed", 1), ("cancelled", None), ("running", None),
        ("pending", None), ("succeeded", 0), ("failed", 1), ("cancelled", None),
        ("running", None), ("pending", None), ("lost", None),
    ]  # fmt: skip
    assert "no A100" in batch["sky://ts-f1/f1"].reason  # type: ignore[union-attr]
    assert isinstance(batch["sky://prod-serving/x"], UsageError)


def test_skypilot_batch_is_one_sky_queue_whatever_the_number(tmp_path: Path, sky: Path) -> None:
    from torchship.backends.skypilot import SkyPilotBackend

    states = ["RUNNING", "PENDING", "SUCCEEDED", "FAILED"]
    for n in (1, 10, 100):
        home = tmp_path / f"ts{n}"
        for i in range(n):
            (home / f"runs/j{n}-{i}").mkdir(parents=True)
            sky_cluster(tmp_path / "sky-home", f"ts-j{n}-{i}", states[i % 4])
        runner = Counted()
        batch = SkyPilotBackend(None, home, str(sky), runner=runner).statuses(
            [f"sky://ts-j{n}-{i}/j{n}-{i}" for i in range(n)]
        )
        assert len(runner.calls) == 1 and runner.calls[0][1:4] == [
            "queue", "--output", "json",
        ]  # fmt: skip
        assert [s.state for s in batch.values()] == [  # type: ignore[union-attr]
            ["running", "pending", "succeeded", "failed"][i % 4] for i in range(n)
        ]
    runner = Counted()
    ended = SkyPilotBackend(None, tmp_path / "ts1", str(sky), runner=runner)
    (tmp_path / "ts1/runs/j1-0/exit.json").write_text('{"state": "succeeded", "exit_code": 0}')
    assert ended.statuses(["sky://ts-j1-0/j1-0"])["sky://ts-j1-0/j1-0"] == SiteStatus(
        "succeeded", 0, ""
    )
    assert runner.calls == []  # every job recorded its end: SkyPilot is not asked


def test_skypilot_that_cannot_be_asked_raises_once(tmp_path: Path, sky: Path) -> None:
    from torchship.backends.skypilot import SkyPilotBackend

    handles = sky_jobs(tmp_path / "ts", tmp_path / "sky-home")
    with pytest.raises(UsageError) as e:
        SkyPilotBackend(None, tmp_path / "ts", None).statuses(handles)
    assert "SkyPilot is not installed here" in e.value.message
    assert "8 cluster(s)" in e.value.message and "sky check" in e.value.hint
    broken = tmp_path / "bin/broken-sky"
    broken.write_text(
        "#!/bin/sh\necho 'sky.exceptions.ApiServerConnectionError: Could not connect to "
        "SkyPilot API server at http://127.0.0.1:46580.' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    runner = Counted()
    with pytest.raises(UsageError) as e:
        SkyPilotBackend(None, tmp_path / "ts", str(broken), runner=runner).statuses(handles)
    assert e.value.message.startswith("`sky queue` failed: sky.exceptions.ApiServerConnection")
    assert "sky api info" in e.value.hint and len(runner.calls) == 1


# --- local --------------------------------------------------------------------------------------
# No site to call: the run folders and this machine's processes. The batch reads /proc once
# for all the jobs that need it (a lost job is asked about at every `status`), not once each.


def test_local_batch_says_what_status_says_of_each(tmp_path: Path) -> None:
    import os
    import sys
    import time
    import uuid

    from torchship.backends.local import LocalBackend, LocalOptions

    tag = uuid.uuid4().hex[:8]  # this run's job ids: other runs' processes carry theirs
    ids = {k: f"{k}-{tag}" for k in ("ok", "failed", "live", "starting", "orphan", "lost")}
    home = tmp_path / "home"
    for job_id in ids.values():
        (home / "runs" / job_id).mkdir(parents=True)
    run = {k: home / "runs" / v for k, v in ids.items()}
    (run["ok"] / "exit.json").write_text('{"state": "succeeded", "exit_code": 0, '
                                         '"ended_at": 1764500000.5}')  # fmt: skip
    (run["failed"] / "exit.json").write_text('{"state": "failed", "exit_code": 1, "reason": '
                                             '"rank 1 exited 1"}')  # fmt: skip
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    supervisor = subprocess.Popen([*sleep, ids["live"]])  # its command line names the job
    orphan = subprocess.Popen(sleep, env={**os.environ, "TORCHSHIP_JOB_ID": ids["orphan"]})
    try:
        (run["live"] / "supervisor.json").write_text(json.dumps({"pid": supervisor.pid}))
        (run["orphan"] / "supervisor.json").write_text('{"pid": 999999999, "reaper": 1}')
        old = time.time() - 3600
        for k in ("live", "orphan", "lost"):
            os.utime(run[k], (old, old))
        be = LocalBackend(LocalOptions(sys.executable, home, "box"))
        handles = [f"local://box/{v}" for v in ids.values()] + ["local://far/x", "local://box"]
        for _ in range(50):  # the orphan's environment is readable once it has started
            if be.status(handles[4]).state == "running":
                break
            time.sleep(0.05)
        batch = be.statuses(handles)
        same(batch, be.status, handles)
    finally:
        supervisor.kill()
        orphan.kill()
        supervisor.wait()
        orphan.wait()
    got = [(s.state, s.exit_code) for s in batch.values() if isinstance(s, SiteStatus)]
    assert got == [("succeeded", 0), ("failed", 1), ("running", None), ("pending", None),
                   ("running", None), ("lost", None)]  # fmt: skip
    assert f"(pids {orphan.pid})" in batch[handles[4]].reason  # type: ignore[union-attr]
    assert isinstance(batch["local://far/x"], UsageError)


def test_local_one_pass_over_proc_finds_what_job_pids_finds(tmp_path: Path) -> None:
    from torchship.backends.local import pids_by_job
    from torchship.backends.supervise import job_pids

    envs = {101: [b"PATH=/bin", b"TORCHSHIP_JOB_ID=a"], 102: [b"TORCHSHIP_JOB_ID=a"],
            103: [b"TORCHSHIP_JOB_ID=b", b"X=TORCHSHIP_JOB_ID=c"], 104: [b"HOME=/root"],
            105: [b"TORCHSHIP_JOB_ID=ab"]}  # fmt: skip
    for pid, env in envs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "environ").write_bytes(b"\0".join(env) + b"\0")
    (tmp_path / "106").mkdir()  # a process gone before its environ was read
    (tmp_path / "self").mkdir()
    index = pids_by_job(tmp_path)
    assert {k: sorted(v) for k, v in index.items()} == {"a": [101, 102], "b": [103], "ab": [105]}
    for job_id in ("a", "b", "ab", "c", "zz"):
        assert sorted(index.get(job_id, [])) == sorted(job_pids(job_id, tmp_path)), job_id
