"""`torchship site list|check` and `torchship plan` as a user runs them."""

from __future__ import annotations

import json
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
    job = str(REPO / "examples/quickstart")
    r = run_cli("run", job, "--site", "auto", "--sites", str(sites), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("status", "--json", env=env)
    (row,) = json.loads(r.stdout)
    assert row["site"] == "local" and row["state"] == "succeeded"
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
    cloud = ["--kind", "kubernetes", "--trust", "public", "--gpu", "h100:64:8", "--price", "6.88"]
    r = run_cli("site", "add", "aws", *cloud, "--sites", f)
    assert r.returncode == 2 and "needs its date and source" in r.stderr  # nothing written
    dated = ["--price-as-of", "2025-06-01", "--price-source", "AWS on-demand, us-east-1"]
    r = run_cli("site", "add", "aws", *cloud, *dated, "--sites", f)
    assert r.returncode == 0, r.stderr
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
