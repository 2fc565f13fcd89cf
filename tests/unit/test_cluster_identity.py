"""A Kubernetes site is bound to one cluster, and no path sends a job's data where its site
may not hold it (issue 17, items 1, 2 and 4).

Two stand-in API servers on 127.0.0.1 play an on-prem cluster and a cloud one; a real
kubeconfig names them as contexts, and the real client reads it (torchship.k8s.apply.connect).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fake_kube import FakeKube
from tests.fake_kube import write_kubeconfig as kubeconfig
from torchship.backends.base import DataPolicyError
from torchship.backends.kubernetes import KubernetesBackend, parse_handle
from torchship.backends.skypilot import sky_task
from torchship.cli import main
from torchship.errors import SpecError
from torchship.k8s.identity import IdentityError, ca_fingerprint, identity_of, normal_url, record
from torchship.lock import read_lock
from torchship.sites import sites_from_toml
from torchship.spec.job import load_job

HYBRID = REPO / "examples/hybrid"

SITES = """
[[site]]
name = "onprem"
kind = "kubernetes"
trust = "private"
context = "onprem"
namespace = "ml"
gpus = [{ model = "A100", count = 16, per_node = 8 }]
max_nodes = 2

[[site]]
name = "cloud"
kind = "kubernetes"
tier = 2
trust = "public"
context = "cloud"
namespace = "ml"
gpus = [{ model = "A100", count = 64, per_node = 8 }]
max_nodes = 8
"""

SENSITIVE_JOB = """
[job]
name = "patients"
workload = "reference"
gpus_per_node = 1
gpu_models = ["A100"]

[[job.data]]
path = "pvc://records"
mount = "/data/records"
class = "sensitive"
"""


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[tuple[FakeKube, FakeKube]]:
    with FakeKube() as onprem, FakeKube() as cloud:
        yield onprem, cloud


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "job.toml").write_text(SENSITIVE_JOB)
    (tmp_path / "torchship.lock").write_text((HYBRID / "torchship.lock").read_text())
    (tmp_path / "sites.toml").write_text(SITES)
    return tmp_path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI's main() in this process, with the environment given: the same code path
    as a new interpreter, a second faster per call."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def run_auto(project: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    """`torchship run job.toml --site auto --sites sites.toml` in the project."""
    sites = str(project / "sites.toml")
    return run_cli("run", str(project / "job.toml"), "--site", "auto", "--sites", sites, *flags,
                   env=env)  # fmt: skip


def env_for(tmp_path: Path, kube: Path) -> dict[str, str]:
    return {"KUBECONFIG": str(kube), "TORCHSHIP_HOME": str(tmp_path / "home")}


def test_a_kubernetes_site_must_name_its_context() -> None:
    """Before: a site without context used the current one, so `kubectl config use-context
    cloud` moved the next sensitive job to the cloud."""
    text = SITES.replace('context = "onprem"\n', "")
    with pytest.raises(SpecError) as e:
        sites_from_toml(text, "sites.toml")
    assert e.value.field == "site[0].context" and "use-context" in e.value.message


def test_switching_the_current_context_does_not_move_a_job(
    clusters: tuple[FakeKube, FakeKube], project: Path
) -> None:
    onprem, cloud = clusters
    cfg = kubeconfig(project / "kubeconfig", {"onprem": onprem.url, "cloud": cloud.url}, "cloud")
    env = env_for(project, cfg)
    r = run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env)
    assert r.returncode == 0, r.stderr
    assert f"onprem: context 'onprem' recorded: {onprem.url}, no CA" in r.stdout
    r = run_auto(project, env, "--detach")
    assert r.returncode == 0, r.stderr
    assert onprem.find("jobs") and not cloud.objects  # the current context is "cloud"


def test_a_context_pointed_at_another_cluster_is_refused_everywhere(
    clusters: tuple[FakeKube, FakeKube], project: Path
) -> None:
    """The site's context, edited to reach the cloud cluster after it was recorded: apply,
    status, logs and cancel all refuse, and nothing reaches the cloud."""
    onprem, cloud = clusters
    cfg = kubeconfig(project / "kubeconfig", {"onprem": onprem.url, "cloud": cloud.url}, "onprem")
    env = env_for(project, cfg)
    assert run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env).returncode == 0
    r = run_auto(project, env, "--detach", "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["job"]["id"]
    kubeconfig(cfg, {"onprem": cloud.url, "cloud": cloud.url}, "onprem")  # the switch
    r = run_auto(project, env, "--detach")
    assert r.returncode == 1
    assert f"context 'onprem' of site onprem now reaches {cloud.url}" in r.stderr
    assert not cloud.objects
    for command in (("status", job_id), ("logs", job_id), ("cancel", job_id)):
        r = run_cli(*command, env=env)
        assert r.returncode != 0 and "not the cluster this job was created on" in r.stderr, command
        assert "Traceback" not in r.stderr
    assert onprem.find("jobs")  # cancel did not reach it through the wrong cluster
    r = run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env)
    assert r.returncode == 1 and "now reaches" in r.stderr and "site forget onprem" in r.stderr


def test_sites_of_different_trust_may_not_share_a_cluster(
    clusters: tuple[FakeKube, FakeKube], project: Path
) -> None:
    same_context = SITES.replace('context = "cloud"', 'context = "onprem"')
    with pytest.raises(SpecError) as e:
        sites_from_toml(same_context, "sites.toml")
    assert "onprem (private) and cloud (public) share the kubeconfig context" in e.value.message
    registry = 'registry = "registry.internal.example/ml/"\n'
    shared = SITES.replace("max_nodes = 2\n", "max_nodes = 2\n" + registry).replace(
        "max_nodes = 8\n", "max_nodes = 8\n" + registry.replace("/ml/", "/ML")
    )
    with pytest.raises(SpecError) as e:
        sites_from_toml(shared, "sites.toml")
    assert "share the registry 'registry.internal.example'" in e.value.message
    for spelling in ("registry.internal.example:443/ml/", "Registry.Internal.Example./other/"):
        other = SITES.replace("max_nodes = 8\n", f'max_nodes = 8\nregistry = "{spelling}"\n')
        other = other.replace("max_nodes = 2\n", "max_nodes = 2\n" + registry)
        with pytest.raises(SpecError, match="share the registry"):
            sites_from_toml(other, "sites.toml")
    # two contexts, one API server: found when the clusters are recorded
    onprem, _ = clusters
    cfg = kubeconfig(project / "kubeconfig", {"onprem": onprem.url, "cloud": onprem.url}, "onprem")
    r = run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env_for(project, cfg))
    assert r.returncode == 1
    assert f"sites onprem (private) and cloud (public) would share the cluster {onprem.url}" in (
        r.stderr
    )


def test_the_backend_rechecks_data_classes_before_sending(
    clusters: tuple[FakeKube, FakeKube], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request for sensitive data handed straight to the public site's backend (no
    placement in between) is refused before any request reaches the cluster."""
    monkeypatch.setenv("TORCHSHIP_HOME", str(project / "home"))
    _, cloud = clusters
    sites = {s.name: s for s in sites_from_toml(SITES, "sites.toml")}
    record("cloud", "cloud", "public", identity_of(cloud.api_client()))
    cloud.requests.clear()
    be = KubernetesBackend(sites["cloud"], connector=lambda _c: cloud.api_client())
    job = load_job(project / "job.toml")
    request_lock = read_lock(project / "torchship.lock")
    request = be.plan(job, request_lock, "01jobid")
    assert request.data_classes == ("sensitive",)
    with pytest.raises(DataPolicyError) as e:
        be.apply(request)
    assert "sensitive data may not go to cloud (public site" in e.value.message
    with pytest.raises(DataPolicyError, match="does not say what data"):
        be.apply(replace(request, data_classes=()))
    onprem_plan = KubernetesBackend(sites["onprem"]).plan(job, request_lock, "01jobid")
    with pytest.raises(DataPolicyError, match="planned for site 'onprem', not 'cloud'"):
        be.apply(replace(onprem_plan, data_classes=("public",)))
    assert not cloud.requests  # nothing was sent, not even a read


def test_old_and_foreign_handles_are_refused_not_guessed() -> None:
    with pytest.raises(IdentityError, match="does not say which cluster"):
        parse_handle("k8s://-/ml/job/x")
    with pytest.raises(IdentityError, match="does not say which cluster"):
        parse_handle("k8s://onprem/ml/job/x")
    assert parse_handle("k8s://onprem/ml/job/x?cluster=ab12")[4] == "ab12"


def test_an_https_cluster_is_pinned_by_its_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real kubeconfig loader, an https server and certificate-authority-data: the identity
    is the CA's fingerprint (reformatting the PEM does not change it); the same URL with
    another CA is another cluster, and is refused."""
    import base64
    import re

    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        pytest.skip("no CA bundle on this machine to take certificates from")
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n",
                      bundle.read_text(), re.S)[:2]  # fmt: skip
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path / "home"))
    from torchship.k8s.apply import connect

    def identity_with(pem: str) -> object:
        cfg = tmp_path / "kubeconfig"
        cfg.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "onprem",
            "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443",
                          "certificate-authority-data": base64.b64encode(pem.encode()).decode()}}],
            "users": [{"name": "me", "user": {"token": "t"}}],
            "contexts": [{"name": "onprem", "context": {"cluster": "c", "user": "me"}}],
        }))  # fmt: skip
        monkeypatch.setenv("KUBECONFIG", str(cfg))
        return identity_of(connect("onprem"), ask=False)  # no server there: the kubeconfig's

    first = identity_with(pems[0])
    assert first == identity_with(pems[0].replace("\n", "\r\n"))
    assert first.ca_sha256 == ca_fingerprint(pems[0]) != "none"  # type: ignore[attr-defined]
    record("onprem", "onprem", "private", first)  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match=r"now reaches https://10\.0\.0\.1:6443, CA sha256:"):
        record("onprem", "onprem", "private", identity_with(pems[1]))  # type: ignore[arg-type]
    assert ca_fingerprint("no certificate here") == "none"


def test_a_skypilot_site_is_private_only_on_infrastructure_it_names() -> None:
    sky = """
[[site]]
name = "sky"
kind = "skypilot"
trust = "private"
gpus = [{ model = "A100", count = 8 }]
"""
    with pytest.raises(SpecError) as e:
        sites_from_toml(sky, "sites.toml")
    assert e.value.field == "site[0].trust" and "SkyPilot may provision" in e.value.message
    with pytest.raises(SpecError):
        sites_from_toml(sky.replace('trust = "private"', 'trust = "private"\ninfra = "k8s"'), "s")
    with pytest.raises(SpecError, match="region inside infra"):
        sites_from_toml(sky.replace('trust = "private"', 'trust = "public"\ninfra = "aws"\n'
                                    'region = "us-east-1"'), "s")  # fmt: skip
    on_k8s = sky.replace('trust = "private"', 'trust = "private"\ninfra = "k8s/onprem"')
    (site,) = sites_from_toml(on_k8s, "s")
    assert site.kube_context == "onprem"
    task = sky_task(load_job(HYBRID / "job-1node.toml"), read_lock(HYBRID / "torchship.lock"),
                    "01jobid", site)  # fmt: skip
    assert task["resources"]["infra"] == "k8s/onprem" and "region" not in task["resources"]
    # the same context as a public Kubernetes site: one cluster, two trusts
    public_k8s = (
        '\n[[site]]\nname = "k"\nkind = "kubernetes"\ntrust = "public"\ncontext = "onprem"\n'
    )
    with pytest.raises(SpecError, match="share the kubeconfig context 'onprem'"):
        sites_from_toml(sky.replace('trust = "private"', 'trust = "private"\ninfra = "k8s/onprem"')
                        + public_k8s, "s")  # fmt: skip


def test_site_add_records_the_cluster_and_refuses_a_shared_one(
    clusters: tuple[FakeKube, FakeKube], tmp_path: Path
) -> None:
    onprem, _ = clusters
    cfg = kubeconfig(tmp_path / "kubeconfig", {"a": onprem.url, "b": onprem.url}, "a")
    env, sites = env_for(tmp_path, cfg), tmp_path / "sites.toml"
    r = run_cli("site", "add", "onprem", "--kind", "kubernetes", "--trust", "private",
                "--context", "a", "--sites", str(sites), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"onprem: context 'a' recorded: {onprem.url}" in r.stdout
    before = sites.read_text()
    r = run_cli("site", "add", "cloud", "--kind", "kubernetes", "--trust", "public",
                "--context", "b", "--sites", str(sites), env=env)  # fmt: skip
    assert r.returncode == 1 and "would share the cluster" in r.stderr
    assert sites.read_text() == before  # nothing half-written
    r = run_cli("site", "forget", "onprem", env=env)
    assert r.returncode == 0 and "forgotten" in r.stdout
    assert run_cli("site", "forget", "onprem", env=env).returncode == 2


def test_a_private_skypilot_site_launches_only_on_its_recorded_cluster(
    clusters: tuple[FakeKube, FakeKube], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchship.backends.skypilot import SkyPilotBackend

    onprem, cloud = clusters
    monkeypatch.setenv("TORCHSHIP_HOME", str(project / "home"))
    cfg = kubeconfig(project / "kubeconfig", {"onprem": onprem.url}, "onprem")
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    text = '[[site]]\nname = "sky"\nkind = "skypilot"\ntrust = "private"\ninfra = "k8s/onprem"\n'
    (site,) = sites_from_toml(text + 'gpus = [{ model = "A100", count = 8 }]\n', "s")
    be = SkyPilotBackend(site, project / "home", sky=None)
    job = project / "job.toml"
    job.write_text(job.read_text().replace('"pvc://records"', '"gs://example-records/train"'))
    request = be.plan(load_job(job), read_lock(project / "torchship.lock"), "01")
    with pytest.raises(IdentityError, match="is not recorded"):
        be.apply(request)
    record("sky", "onprem", "private", identity_of(onprem.api_client()))
    kubeconfig(cfg, {"onprem": cloud.url}, "onprem")  # the context now reaches the cloud
    with pytest.raises(IdentityError, match=f"now reaches {cloud.url}"):
        be.apply(request)


def test_a_gateway_or_proxy_in_front_of_another_cluster_is_refused(
    clusters: tuple[FakeKube, FakeKube], project: Path
) -> None:
    """One URL and CA, another cluster behind it (a gateway routing by user, Teleport-style):
    the cluster's own answer (kube-system's UID) changed, so nothing is sent. A proxy-url
    added to the context changes the route: refused too."""
    onprem, cloud = clusters
    cfg = kubeconfig(project / "kubeconfig", {"onprem": onprem.url, "cloud": cloud.url}, "onprem")
    env = env_for(project, cfg)
    assert run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env).returncode == 0
    onprem.uid = cloud.uid  # the gateway now routes this user to the cloud cluster
    r = run_auto(project, env, "--detach")
    assert r.returncode == 1 and f"cluster uid {cloud.uid}" in r.stderr
    assert not onprem.find("jobs")
    onprem.uid = "recorded-again"
    raw = json.loads(cfg.read_text())
    raw["clusters"][0]["cluster"]["proxy-url"] = cloud.url
    cfg.write_text(json.dumps(raw))
    r = run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env)
    assert r.returncode == 1 and "proxy=" in r.stderr


def test_one_server_spelt_two_ways_is_one_cluster(
    clusters: tuple[FakeKube, FakeKube], project: Path
) -> None:
    """`http://localhost:P` for the private site, `HTTP://127.0.0.1:P/` for the public one:
    the same cluster (its UID says so), refused when recorded."""
    onprem, _ = clusters
    port = onprem.url.rsplit(":", 1)[1]
    urls = {"onprem": f"http://localhost:{port}", "cloud": f"HTTP://127.0.0.1:{port}/"}
    cfg = kubeconfig(project / "kubeconfig", urls, "onprem")
    r = run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env_for(project, cfg))
    assert r.returncode == 1 and "would share the cluster" in r.stderr
    assert normal_url("HTTPS://Host.Example.:443/") == normal_url("https://host.example")
    assert normal_url("https://h:6443/") == "https://h:6443" != normal_url("https://h:6444")


def test_a_context_named_like_an_eks_arn_round_trips_through_the_handle(
    clusters: tuple[FakeKube, FakeKube], project: Path
) -> None:
    onprem, _ = clusters
    arn = "arn:aws:eks:eu-west-1:123456789012:cluster/prod"
    (project / "sites.toml").write_text(SITES.replace('context = "onprem"', f'context = "{arn}"'))
    cfg = kubeconfig(project / "kubeconfig", {arn: onprem.url}, arn)
    env = env_for(project, cfg)
    assert run_cli("site", "check", "--sites", str(project / "sites.toml"), env=env).returncode == 0
    r = run_auto(project, env, "--detach", "--json")
    assert r.returncode == 0, r.stderr
    handle = json.loads(r.stdout)["job"]["handle"]
    assert parse_handle(handle)[0] == arn
    job_id = json.loads(r.stdout)["job"]["id"]
    assert run_cli("status", job_id, env=env).returncode == 0
    assert run_cli("cancel", job_id, env=env).returncode == 0 and not onprem.find("jobs")


@pytest.mark.parametrize("infra", ["K8S/onprem", "Kubernetes/onprem", "k8s/onprem/", "/k8s/onprem"])
def test_skypilot_infra_is_read_as_skypilot_reads_it(infra: str) -> None:
    """Spellings SkyPilot accepts for the private site's context: a public SkyPilot site on
    them shares the private cluster."""
    private = (
        '[[site]]\nname = "onprem"\nkind = "kubernetes"\ntrust = "private"\ncontext = "onprem"\n'
    )
    public = f'[[site]]\nname = "sky"\nkind = "skypilot"\ntrust = "public"\ninfra = "{infra}"\n'
    with pytest.raises(SpecError, match="share the kubeconfig context 'onprem'"):
        sites_from_toml(private + public, "sites.toml")


def test_a_skypilot_site_on_kubernetes_names_its_context() -> None:
    for infra, says in (
        ("k8s", "names no context"),
        ("k8s//x", "empty part"),
        ("k8s/*", "no spaces or *"),
    ):
        text = f'[[site]]\nname = "sky"\nkind = "skypilot"\ntrust = "public"\ninfra = "{infra}"\n'
        with pytest.raises(SpecError, match=re.escape(says)):
            sites_from_toml(text, "sites.toml")
