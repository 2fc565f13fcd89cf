"""A real Slurm cluster here: Debian's slurm-wlm and munge (installed with apt when missing),
started from a config in a per-run folder, stopped by PID.

Nothing listens outside the run: slurmctld and each slurmd run in network namespaces of their
own (`ip netns`, entered with `nsenter --net`), so their ports exist only on the namespaces'
loopback and on a veth pair between the two nodes of a two-node cluster (10.77.0.1 and
10.77.0.2; a one-node cluster has both ends of the pair). munged listens on a
Unix socket in the run folder. Commands that talk to the cluster (sbatch, squeue, torchship)
run inside the first node's namespace, as on a login node: `cluster.run(...)` and
`cluster.prefix`. Every run has its own folder, namespaces and munge key, so runs at once do
not collide.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

INTERFACE = "ts0"  # the nodes' link to each other
PACKAGES = {"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "munged": "munge", "ip": "iproute2"}


def install() -> str | None:
    """Install slurm-wlm and munge when missing; the reason when they cannot be."""
    missing = sorted({pkg for cmd, pkg in PACKAGES.items() if not shutil.which(cmd)})
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{', '.join(missing)} missing and not root (apt-get install {' '.join(missing)})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return f"apt-get install {' '.join(missing)} failed: {' '.join(tail)}"
    return None


def unavailable() -> str | None:
    """Why a cluster cannot run here (installs what is missing first), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    return install()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    netns: tuple[str, ...]  # one per node; the first is the login node's
    nodes: tuple[str, ...]
    pids: list[int] = field(default_factory=list)

    @property
    def prefix(self) -> list[str]:
        """Run a command on the login node: inside its namespace, with this cluster's config."""
        return [*_enter(self.netns[0]), "env", f"SLURM_CONF={self.conf}"]

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60,
        check: bool = True, cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        proc = subprocess.run(
            [*self.prefix, *extra, *argv], capture_output=True, text=True, timeout=timeout,
            check=False, cwd=cwd,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} → {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        states = ""
        while time.monotonic() < deadline:
            proc = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False)
            states = proc.stdout.strip()
            seen = dict(ln.split()[:2] for ln in states.splitlines() if len(ln.split()) >= 2)
            if (
                proc.returncode == 0
                and len(seen) == len(self.nodes)
                and all(s.rstrip("*") in ("idle", "mixed", "allocated") for s in seen.values())
            ):
                return
            time.sleep(0.3)
        raise AssertionError(f"slurm nodes not ready in {timeout} s: {states!r}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted((self.root / "log").glob("*.log"))
        )


def _enter(netns: str) -> list[str]:
    """Run in a network namespace only: `ip netns exec` would also remount /sys, hiding the
    cgroup filesystem slurmd needs."""
    return ["nsenter", f"--net=/run/netns/{netns}"]


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _pid(path: Path, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().split()[0])
        time.sleep(0.05)
    raise AssertionError(f"{path} not written in {timeout} s")


def _end_jobs(cluster: SlurmCluster) -> None:
    """Cancel every job, then kill what is left of them (srun, slurmstepd, the job's own
    processes carry the cluster's SLURM_CONF): a failed test must leave nothing running."""
    ids = cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
    if ids:
        cluster.run("scancel", *ids, check=False)
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.strip()
        ):
            time.sleep(0.2)
    mark = f"SLURM_CONF={cluster.conf}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if mark in environ.split(b"\0") and int(proc.name) not in cluster.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _stop_all(pids: list[int]) -> None:
    """SIGTERM to every daemon at once, then wait for each (SIGKILL after 3 s)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in reversed(pids):
        _stop(pid)


def _stop(pid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


CONF = """\
ClusterName=torchship
SlurmctldHost={host}({ctld_addr})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=60 State=UP
PartitionName=gpu Nodes=ALL MaxTime=60 State=UP
"""


@contextmanager
def slurm_cluster(root: Path, nodes: int = 1) -> Iterator[SlurmCluster]:
    """A running cluster of `nodes` (1 or 2) nodes of 2 CPUs each, partitions `debug` (the
    default) and `gpu`. No GRES GPUs: slurmd 22.05 counts 0 of a `gpu` GRES declared without
    device files (tried with and without Flags=CountOnly and NodeName), and this machine has no
    GPU device to declare, so GPU requests are golden-tested only."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for sub in ("munge", "state", "spool", "log", "spool/n1", "spool/n2"):
        (root / sub).mkdir(exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    tag = secrets.token_hex(3)
    netns = tuple(f"ts{tag}n{i + 1}" for i in range(nodes))
    names = tuple(f"n{i + 1}" for i in range(nodes))
    addrs = ("10.77.0.1", "10.77.0.2")[:nodes]
    with ExitStack() as stack:
        cluster = SlurmCluster(root, root / "slurm.conf", netns, names)
        stack.callback(_stop_all, cluster.pids)
        stack.callback(_end_jobs, cluster)  # first: the jobs, then the daemons
        for ns in netns:
            _sh("ip", "netns", "add", ns)
            stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        # a veth pair: between the two nodes, or both ends in the one node's namespace (with
        # only a loopback there, getaddrinfo's AI_ADDRCONFIG would resolve no IPv4 address)
        # two nodes: each end is named ts0 in its node (INTERFACE, the site's `interface`)
        peer = INTERFACE if nodes == 2 else "ts1"
        _sh("ip", "-n", netns[0], "link", "add", INTERFACE, "type", "veth",
            "peer", "name", peer, "netns", netns[-1])  # fmt: skip
        _sh("ip", "-n", netns[0], "addr", "add", f"{addrs[0]}/24", "dev", INTERFACE)
        if nodes == 2:
            _sh("ip", "-n", netns[1], "addr", "add", f"{addrs[1]}/24", "dev", peer)
        _sh("ip", "-n", netns[0], "link", "set", INTERFACE, "up")
        _sh("ip", "-n", netns[-1], "link", "set", peer, "up")
        node_lines = "\n".join(
            f"NodeName={n} NodeAddr={a} CPUs=2 RealMemory=8000 State=UNKNOWN"
            for n, a in zip(names, addrs, strict=True)
        )
        cluster.conf.write_text(
            CONF.format(
                root=root,
                host=socket.gethostname(),
                ctld_addr=addrs[0],
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                nodes=node_lines,
            )
        )
        munge = root / "munge"
        _sh("munged", "-f", f"--socket={munge}/munge.sock", f"--key-file={key}",
            f"--pid-file={munge}/munged.pid", f"--log-file={root}/log/munged.log",
            f"--seed-file={munge}/munged.seed")  # fmt: skip
        cluster.pids.append(_pid(munge / "munged.pid"))
        env = ["env", f"SLURM_CONF={cluster.conf}"]
        _sh(*_enter(netns[0]), *env, "slurmctld", "-f", str(cluster.conf))
        cluster.pids.append(_pid(root / "slurmctld.pid"))
        for ns, name in zip(netns, names, strict=True):
            _sh(*_enter(ns), *env, "slurmd", "-f", str(cluster.conf), "-N", name)
            cluster.pids.append(_pid(root / f"slurmd-{name}.pid"))
        cluster.wait_idle()
        yield cluster
