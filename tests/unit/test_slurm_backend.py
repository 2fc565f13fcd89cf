"""The Slurm site kind: its options, the batch scripts compared whole with goldens, the
scripts' shell text executed against hostile values, handles, and the queue reading.

Real Slurm runs in tests/integration/test_slurm.py (e2e); here `srun` and `scontrol` are
stand-ins that print what they were given, since what is tested is the shell quoting.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from torchship.backends.slurm import (
    SlurmBackend,
    make_handle,
    options_of,
    parse_slurm_handle,
    parse_start,
    sbatch_script,
)
from torchship.errors import SpecError, UsageError
from torchship.lock import read_lock
from torchship.place.sites import Site
from torchship.sites import sites_from_toml
from torchship.spec.job import load_job

REPO = Path(__file__).resolve().parents[2]
HYBRID = REPO / "examples/hybrid"
GOLDEN = REPO / "tests/golden/slurm"
SITE = """
[[site]]
name = "hpc"
kind = "slurm"
tier = 1
trust = "private"
data_classes = ["public", "internal", "sensitive"]
gpus = [{ model = "A100", count = 64, per_node = 8 }]
max_nodes = 4
partition = "gpu"
account = "ml-team"
qos = "normal"
gres = { A100 = "a100" }
python = "/shared/envs/hybrid/bin/python"
runs_dir = "/shared/torchship/runs"
interface = "ib0"
"""


def site(extra: str = "", base: str = SITE) -> Site:
    return sites_from_toml(base + extra, "sites.toml")[0]


def cases() -> dict[str, tuple[Site, str]]:
    pyxis = 'container = "pyxis"\nregistry = "registry.example.com/ml/"\n'
    apptainer = 'container = "apptainer"\nregistry = "registry.example.com/ml/"\n'
    return {
        "one-node": (site(), "job-1node.toml"),
        "two-node": (site(), "job-2node.toml"),
        "two-node-pyxis": (site(pyxis), "job-2node.toml"),
        "one-node-apptainer": (site(apptainer), "job-1node.toml"),
    }


def render(name: str) -> str:
    s, job_file = cases()[name]
    job = load_job(HYBRID / job_file)
    data = []  # the example's data as it sits on the cluster's shared filesystem
    for d in job.data:
        path = "/shared/datasets/" + d.mount.rsplit("/", 1)[-1]
        data.append(replace(d, path=path, mount=d.mount if options_of(s).container else path))
    job = replace(job, data=tuple(data))
    return sbatch_script(job, read_lock(HYBRID / "torchship.lock"), "01slurmjob", s)


@pytest.mark.parametrize("name", ["one-node", "two-node", "two-node-pyxis", "one-node-apptainer"])
def test_the_batch_scripts_are_the_goldens(name: str, request: pytest.FixtureRequest) -> None:
    got = render(name)
    path = GOLDEN / f"{name}.sbatch"
    if request.config.getoption("--regen-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert got == path.read_text(), f"{path.name} differs; --regen-golden"
    subprocess.run(["bash", "-n"], input=got, text=True, check=True)  # it parses


def test_the_goldens_say_what_each_case_needs() -> None:
    one, two = render("one-node"), render("two-node")
    assert "#SBATCH --gpus-per-node=a100:4" in one and "--rdzv-endpoint=127.0.0.1:0" in one
    assert "#SBATCH --nodes=2" in two and '--rdzv-conf="is_host=$h"' in two
    assert "export GLOO_SOCKET_IFNAME=ib0" in two and "GLOO_SOCKET_IFNAME=lo" in one
    assert "--container-image=registry.example.com#ml/" in render("two-node-pyxis")
    assert "apptainer exec --nv --bind" in render("one-node-apptainer")
    assert "#SBATCH --requeue" in one and "#SBATCH --account=ml-team" in one


HOSTILE = ["$(touch /tmp/pwned)", "`id`", "a b", "it's", '"q"', "x;y", "$HOME", "\\n", "*"]


def test_hostile_values_reach_the_job_as_they_were_written(tmp_path: Path) -> None:
    """A job whose command and environment hold shell text: the script, run by bash with
    stand-in srun/scontrol, hands the job exactly those words and runs none of them."""
    job_file = tmp_path / "job.toml"
    args = ", ".join(json.dumps(a) for a in HOSTILE)
    env = "\n".join(f"V{i} = {json.dumps(v)}" for i, v in enumerate(HOSTILE))
    job_file.write_text(
        f'[job]\nname = "hostile"\nnodes = 2\ncommand = ["python", "train.py", {args}]\n'
        f"[job.env]\n{env}\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "argv.json"
    fake = {
        # srun: run the command once, as node 0 would (sh -c … with SLURM_NODEID=0)
        "srun": 'while [ "${1#--}" != "$1" ]; do shift; done\n'
        'SLURM_NODEID=0 SLURMD_NODENAME=n1 exec "$@"',
        "scontrol": 'case "$1 $2" in "show hostnames") echo n1;; '
        '*) echo "NodeAddr=10.0.0.1";; esac',
        "python3": f"printf '%s\\0' \"$@\" > {out}; env > {out}.env",
    }
    for name, body in fake.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    s = site(f'\nruns_dir = "{tmp_path / "runs"}"\npython = "python3"\n'.replace("\n", "\n"),
             base=SITE.replace('python = "/shared/envs/hybrid/bin/python"\n', "").replace(
                 'runs_dir = "/shared/torchship/runs"\n', ""))  # fmt: skip
    script = sbatch_script(load_job(job_file), None, "01hostile", s)
    env_vars = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "7",
                "SLURM_JOB_NODELIST": "n[1-2]"}  # fmt: skip
    done = subprocess.run(["bash"], input=script, text=True, capture_output=True, env=env_vars,
                          cwd=tmp_path, check=False, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    argv = out.read_bytes().decode().split("\0")[:-1]
    assert argv[-len(HOSTILE) :] == HOSTILE, argv  # the words, exactly
    assert argv[argv.index("--no-python") + 1 :][:2] == ["python3", "train.py"]
    seen = dict(line.split("=", 1) for line in Path(f"{out}.env").read_text().splitlines()
                if "=" in line)  # fmt: skip
    assert [seen[f"V{i}"] for i in range(len(HOSTILE))] == HOSTILE
    assert not Path("/tmp/pwned").exists()
    ended = json.loads((tmp_path / "runs/01hostile/exit.json").read_text())
    assert ended["state"] == "succeeded" and ended["exit_code"] == 0


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ('partition = "gpu; rm -rf /"\n', "site[0].partition", "not a Slurm name"),
        ('login = "-oProxyCommand=evil"\n', "site[0].login", "not an SSH destination"),
        ('sbatch = ["--comment=a b"]\n', "site[0].sbatch[0]", "not one long sbatch option"),
        ('sbatch = ["--wrap=$(id)"]\n', "site[0].sbatch[0]", "not one long sbatch option"),
        ('container = "docker"\n', "site[0].container", "not a container runtime"),
        ('namespace = "ml"\n', "site[0].namespace", "applies to kubernetes sites"),
        ('partion = "gpu"\n', "site[0].partion", "did you mean 'partition'?"),
    ],
)
def test_bad_options_name_their_field(extra: str, field: str, says: str) -> None:
    base = SITE.replace('partition = "gpu"\n', "") if "partition" in extra else SITE
    with pytest.raises(SpecError) as e:
        sites_from_toml(base + extra, "sites.toml")
    assert e.value.field == field and says in f"{e.value.message} {e.value.hint}", e.value


def test_a_remote_login_needs_a_runs_dir_on_the_shared_filesystem() -> None:
    base = SITE.replace('runs_dir = "/shared/torchship/runs"\n', "")
    with pytest.raises(SpecError, match="shared filesystem"):
        sites_from_toml(base + 'login = "hpc-login"\n', "sites.toml")
    with pytest.raises(SpecError, match="absolute path"):
        sites_from_toml(base + 'runs_dir = "runs"\n', "sites.toml")


def test_handles_round_trip_and_refuse_what_torchship_did_not_write() -> None:
    o = options_of(site('login = "user@hpc-login"\n'))
    h = parse_slurm_handle(make_handle(o, "01abc", "4242"))
    assert (h.login, h.job_id, h.slurm_id, h.run) == (
        "user@hpc-login", "01abc", "4242", "/shared/torchship/runs/01abc")  # fmt: skip
    for bad in (
        "slurm://-oProxyCommand=x/01abc?id=1&runs=%2Fr",  # an ssh option for a host
        "slurm://login/01abc?id=1;rm&runs=%2Fr",  # not a job number
        "slurm://login/01abc?id=1&runs=relative",
        "k8s://login/01abc?id=1&runs=%2Fr",
    ):
        with pytest.raises(UsageError):
            parse_slurm_handle(bad)


def test_the_queue_gives_the_latest_expected_start() -> None:
    now = 1_800_000_000.0
    soon = __import__("time").strftime("%Y-%m-%dT%H:%M:%S", __import__("time").localtime(now + 600))
    assert parse_start("", now) == (0, None)
    assert parse_start(f"N/A\n{soon}\n", now) == (2, 10.0)
    assert parse_start("N/A\n", now) == (1, None)


def test_a_command_on_a_remote_login_node_goes_through_ssh_quoted() -> None:
    seen: list[list[str]] = []

    def runner(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "123\n", "")

    backend = SlurmBackend(site('login = "hpc-login"\n'), runner=runner)
    backend._cluster("hpc-login", ["cat", "/shared/a b/exit.json"])
    assert seen[-1] == ["ssh", "-o", "BatchMode=yes", "hpc-login", "--",
                        "cat '/shared/a b/exit.json'"]  # fmt: skip


def test_the_hybrid_example_with_its_cluster_on_slurm_simulates_alike() -> None:
    """examples/hybrid/sites-slurm.toml: the same fleet with the on-prem cluster a Slurm site;
    the simulator queues it like any site, so the bundled week comes out the same."""
    from torchship.place.simulate import simulate
    from torchship.place.trace import read_trace
    from torchship.sites import load_sites

    trace = read_trace(HYBRID / "trace-week.csv")
    k8s = simulate(trace, load_sites(HYBRID / "sites.toml"), "hybrid")
    slurm_sites = load_sites(HYBRID / "sites-slurm.toml")
    assert {s.kind for s in slurm_sites} >= {"slurm"}
    slurm = simulate(trace, slurm_sites, "hybrid")
    assert (slurm.cost_usd, slurm.wait_p95_min) == (k8s.cost_usd, k8s.wait_p95_min)
    assert any(o.site == "hpc" for o in slurm.outcomes)
