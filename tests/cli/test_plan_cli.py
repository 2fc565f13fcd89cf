"""`torchship site list|check` and `torchship plan` as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import kubernetes_validate
import yaml

from tests.conftest import REPO, run_cli

HYBRID = REPO / "examples/hybrid"
SITES = str(HYBRID / "sites.toml")


def test_site_list_and_check() -> None:
    r = run_cli("site", "list", "--sites", SITES)
    assert r.returncode == 0 and "workstation" in r.stdout and "64×H100" in r.stdout
    r = run_cli("site", "check", "--sites", SITES)
    assert r.returncode == 0 and "4 site(s) ok" in r.stdout
    assert "aws-p5: price is" in r.stdout  # dated prices are re-checked when they age


def test_embedded_default_is_this_machine(tmp_path: Path) -> None:
    r = run_cli("site", "list", env={"TORCHSHIP_HOME": str(tmp_path)})
    assert r.returncode == 0 and "embedded default" in r.stdout and "local" in r.stdout


def test_plan_explains_and_writes_what_it_would_apply(tmp_path: Path) -> None:
    r = run_cli("plan", str(HYBRID / "job-2node.toml"), "--sites", SITES)
    assert r.returncode == 0, r.stderr
    assert "pretrain-2node → onprem" in r.stdout
    assert "sensitive data may not go to aws-p5" in r.stdout
    # on-prem only: the one-node job's Kubernetes objects, valid for the API
    onprem = tmp_path / "sites.toml"
    text = (HYBRID / "sites.toml").read_text()
    onprem.write_text(
        text[text.index('[[site]]\nname = "onprem"') : text.index('[[site]]\nname = "aws-p5"')]
    )
    out = tmp_path / "out"
    r = run_cli("plan", str(HYBRID / "job-1node.toml"), "--sites", str(onprem), "-o", str(out))
    assert r.returncode == 0, r.stderr
    objs = list(yaml.safe_load_all((out / "finetune-1node.yaml").read_text()))
    assert [o["kind"] for o in objs] == ["Job", "NetworkPolicy"]
    for o in objs:
        kubernetes_validate.validate(o, "1.33.0", strict=True)
    job = objs[0]
    assert job["metadata"]["namespace"] == "ml" and job["spec"]["suspend"] is True  # Kueue
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.internal.example/ml/pytorch-cuda:2.9.1-cu128-py3.12-")


def test_refused_exits_1_and_bad_sites_exit_2(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.toml"
    text = (HYBRID / "sites.toml").read_text()
    clouds.write_text(text[text.index('[[site]]\nname = "aws-p5"') :])
    r = run_cli("plan", str(HYBRID / "job-2node.toml"), "--sites", str(clouds))
    assert r.returncode == 1 and "refused" in r.stdout and "data-class" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[site]]\nname = "x"\nkind = "kubernetes"\ntrust = "public"\n'
                   'data_classes = ["sensitive"]\n')  # fmt: skip
    r = run_cli("site", "check", "--sites", str(bad))
    assert r.returncode == 2 and "site[0].data_classes" in r.stderr and "public site" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_site_auto_places_runs_and_stores_why(tmp_path: Path) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text('[[site]]\nname = "this-box"\nkind = "local"\nwait_budget_minutes = 10\n')
    env = {"TORCHSHIP_HOME": str(tmp_path / "home")}
    job = str(tmp_path / "quickstart")  # a copy: the run keeps its checkpoints beside job.toml
    shutil.copytree(REPO / "examples/quickstart", job)
    short = (REPO / "examples/quickstart/job.toml").read_text().replace("steps = 60", "steps = 6")
    (Path(job) / "job.toml").write_text(short)  # placement is the point here, not training
    r = run_cli(
        "run", job, "--site", "auto", "--sites", str(sites), "--no-sync", "--force", env=env
    )  # placement is the point: not the sync, not the preflight
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("status", "--json", env=env)
    (row,) = json.loads(r.stdout)
    assert row["site"] == "this-box" and row["state"] == "succeeded"  # its name, not its kind
    assert row["placement"]["site"] == "this-box" and row["placement"]["decision"] == "run"
    # a Kubernetes choice with no kubeconfig for its context: said so in one line, with the fix
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    r = run_cli("run", str(HYBRID / "job-2node.toml"), "--site", "auto", "--sites", SITES, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: cannot use kubeconfig context 'onprem'")
    assert "kubectl config get-contexts" in r.stderr


def test_site_add_validates_and_appends(tmp_path: Path) -> None:
    f = str(tmp_path / "sites.toml")
    r = run_cli("site", "add", "box", "--kind", "local", "--gpu", "A100:4:4", "--sites", f)
    assert r.returncode == 0 and "added box (1 site(s))" in r.stdout, r.stderr
    cloud = ["--kind", "kubernetes", "--trust", "public", "--context", "eks", "--gpu", "h100:64:8",
             "--price", "6.88"]  # fmt: skip
    r = run_cli("site", "add", "aws", *cloud, "--sites", f)
    assert r.returncode == 2 and "needs its date and source" in r.stderr  # nothing written
    dated = ["--price-as-of", "2025-06-01", "--price-source", "AWS on-demand, us-east-1"]
    env = {"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "TORCHSHIP_HOME": str(tmp_path / "h")}
    r = run_cli("site", "add", "aws", *cloud, *dated, "--sites", f, env=env)
    assert r.returncode == 0, r.stderr
    assert "warning: aws: cluster not recorded: cannot use kubeconfig context 'eks'" in r.stdout
    r = run_cli("site", "add", "aws", "--kind", "docker", "--sites", f)
    assert r.returncode == 2 and "two sites are named 'aws'" in r.stderr
    r = run_cli("site", "add", "k", "--kind", "kubernetes", "--sites", f)
    assert r.returncode == 2 and "trust" in r.stderr and "missing" in r.stderr
    r = run_cli("site", "list", "--sites", f, "--json")
    sites = json.loads(r.stdout)["sites"]
    assert [s["name"] for s in sites] == ["box", "aws"]
    assert sites[1]["gpus"] == [{"model": "H100", "count": 64, "per_node": 8}]  # canonical name


def test_plan_for_a_skypilot_site_writes_the_task_and_launch(tmp_path: Path) -> None:
    text = (HYBRID / "sites.toml").read_text()
    clouds = "[[site]]" + "[[site]]".join(
        part for part in text.split("[[site]]")[1:] if 'kind = "skypilot"' in part
    )
    sites = tmp_path / "sites.toml"
    sites.write_text(clouds)
    out = tmp_path / "plan"
    r = run_cli("plan", str(HYBRID / "job-1node.toml"), "--sites", str(sites), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "finetune-1node → gcp-a2" in r.stdout
    task = yaml.safe_load((out / "finetune-1node.sky.yaml").read_text())
    assert task["resources"]["accelerators"] == {"A100": 4}
    launch = (out / "finetune-1node.sky-launch.sh").read_text().split()
    assert launch[:5] == ["sky", "launch", "--yes", "--down", "--cluster"]


def test_a_hostile_job_name_never_writes_outside_the_output_folder(tmp_path: Path) -> None:
    """A contributed job.toml named `../.github/workflows/deploy` overwrote a CI workflow."""
    work = tmp_path / "repo"
    (work / ".github/workflows").mkdir(parents=True)
    workflow = work / ".github/workflows/deploy.yaml"
    workflow.write_text("on: push\n")
    job = work / "job.toml"
    text = (HYBRID / "job-1node.toml").read_text()
    job.write_text(text.replace('name = "finetune-1node"', 'name = "../.github/workflows/deploy"'))
    onprem = tmp_path / "sites.toml"
    sites = (HYBRID / "sites.toml").read_text()
    onprem.write_text(
        sites[sites.index('[[site]]\nname = "onprem"') : sites.index('[[site]]\nname = "aws-p5"')]
    )
    (work / "torchship.lock").write_text((HYBRID / "torchship.lock").read_text())
    r = run_cli("plan", str(job), "--sites", str(onprem), "-o", str(work / "out"))
    assert r.returncode == 2 and "job.name" in r.stderr and "not a valid job name" in r.stderr
    assert "Traceback" not in r.stderr and workflow.read_text() == "on: push\n"
    assert not (work / "out").exists()  # nothing half-written


def test_the_output_path_is_checked_as_a_second_wall(tmp_path: Path) -> None:
    from dataclasses import replace

    import pytest

    from torchship.cli.plan import write_plan
    from torchship.errors import UsageError
    from torchship.lock import read_lock
    from torchship.sites import load_sites
    from torchship.spec.job import load_job

    job = replace(load_job(HYBRID / "job-1node.toml"), name="../escape")
    site = next(s for s in load_sites(HYBRID / "sites.toml") if s.name == "onprem")
    with pytest.raises(UsageError, match="outside"):
        write_plan(tmp_path / "out", job, read_lock(HYBRID / "torchship.lock"), site)
    assert not (tmp_path / "escape.yaml").exists()


def test_the_local_script_keeps_hostile_values_literal(tmp_path: Path) -> None:
    """`plan -o` for the local site writes `<name>.local.sh`; run by bash, an environment value
    with spaces is an assignment, not a command (`MSG=hello world` exited 127), and no value or
    argument runs code."""
    import os
    import subprocess

    hostile = ["${HOME}", "$(touch pwned1)", "`touch pwned2`", "a b", "x\ny", "'q\"", "; touch p3"]
    out = tmp_path / "seen.json"
    msg = "hello world $(touch pwned4) `touch pwned5` ${HOME} 'x\""
    command = ["python", "-c", "import json, os, sys; open(sys.argv[1], 'w').write("
               "json.dumps([os.environ['MSG'], *sys.argv[2:]]))", str(out), *hostile]  # fmt: skip
    job = tmp_path / "proj/job.toml"
    job.parent.mkdir()
    job.write_text(
        '[job]\nname = "hostile"\ngpus_per_node = 0\nprocesses_per_node = 1\n'
        f"command = {json.dumps(command)}\n[job.env]\nMSG = {json.dumps(msg)}\n"
    )
    home = {"TORCHSHIP_HOME": str(tmp_path / "home")}
    r = run_cli("plan", str(job), "-o", str(tmp_path / "out"), env=home)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "out/hostile.local.sh"
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, env={**os.environ, **home}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(out.read_text()) == [msg, *hostile]
    assert not list(tmp_path.rglob("pwned*")) and not list(tmp_path.rglob("p3"))


def test_a_top_level_data_table_is_refused_not_ignored(tmp_path: Path) -> None:
    """`[[data]]` instead of `[[job.data]]` was ignored: the job became public and was placed on
    a public cloud."""
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "leaky"\ngpus_per_node = 0\nworkload = "reference"\n\n'
        '[[data]]\npath = "pvc://records"\nclass = "sensitive"\n'
    )
    r = run_cli("plan", str(job), "--sites", SITES)
    assert r.returncode == 2 and "unknown top-level" in r.stderr and "[job.data]" in r.stderr
    plain = tmp_path / "plain.toml"
    plain.write_text('[job]\nname = "plain"\ngpus_per_node = 0\nworkload = "reference"\n')
    r = run_cli("plan", str(plain), "--sites", SITES)
    assert "no data declared: treated as public" in r.stdout
