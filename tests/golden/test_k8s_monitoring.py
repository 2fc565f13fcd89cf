"""How Prometheus finds a job's pods, per site: scrape annotations (the default), a PodMonitor
for the Prometheus operator, or nothing; the NetworkPolicy lets the scraper in to the metrics
port only; JSON logs in cluster pods; the docker site publishing the port on loopback."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO
from tests.fake_kube import FakeKube
from torchship.backends.docker import DockerBackend, options
from torchship.backends.kubernetes import KubernetesBackend, options_for
from torchship.errors import SpecError
from torchship.k8s.identity import identity_of, record
from torchship.k8s.render import render, to_yaml
from torchship.lock import read_lock
from torchship.sites import load_sites, sites_from_toml
from torchship.spec.job import load_job

HYBRID = REPO / "examples/hybrid"
ONPREM = next(s for s in load_sites(HYBRID / "sites.toml") if s.name == "onprem")
LOCK = read_lock(HYBRID / "torchship.lock")
K8S_VERSION = "1.33.0"
# spec.podMetricsEndpoints[].interval's pattern in monitoring.coreos.com_podmonitors.yaml
# (prometheus-operator v0.91 CRD)
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                      r"(([0-9]+)s)?(([0-9]+)ms)?)$")  # fmt: skip


def rendered(job_file: str, operator: str = "jobset", **site: Any) -> list[dict[str, Any]]:
    s = dataclasses.replace(ONPREM, options=dataclasses.replace(ONPREM.options, **site))
    return render(load_job(HYBRID / job_file), LOCK, "01jobid", options_for(s), operator)


def templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Job":
        return [obj["spec"]["template"]]
    if obj["kind"] == "JobSet":
        return [r["template"]["spec"]["template"] for r in obj["spec"]["replicatedJobs"]]
    return [r["template"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]


CASES = [("job-1node.toml", "jobset"), ("job-2node.toml", "jobset"),
         ("job-2node.toml", "kubeflow")]  # fmt: skip


@pytest.mark.parametrize(("job_file", "operator"), CASES)
def test_annotations_port_env_and_a_policy_that_lets_the_scraper_in(
    job_file: str, operator: str
) -> None:
    main, policy = rendered(job_file, operator)
    for t in templates(main):
        assert t["metadata"]["annotations"] == {"prometheus.io/scrape": "true",
                                                "prometheus.io/port": "9402",
                                                "prometheus.io/path": "/metrics"}  # fmt: skip
        (c,) = t["spec"]["containers"]
        assert c["ports"] == [{"name": "metrics", "containerPort": 9402, "protocol": "TCP"}]
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["TORCHSHIP_METRICS_PORT"] == "9402"
        assert env["TORCHSHIP_METRICS_ADDR"] == "0.0.0.0"
        assert env["TORCHSHIP_LOG_FORMAT"] == "json"
    peers, scraper = policy["spec"]["ingress"]
    assert scraper == {
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": 9402}],
    }  # fmt: skip
    assert "ports" not in peers  # the job's own pods: any port (NCCL)
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    if main["kind"] == "Job":
        kubernetes_validate.validate(main, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("job_file", "operator"), CASES)
def test_podmonitor_selects_the_jobs_pods_by_their_metrics_port(
    job_file: str, operator: str
) -> None:
    objs = rendered(job_file, operator, prometheus="podmonitor", prometheus_namespace="obs")
    main, policy, monitor = objs
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert monitor["metadata"] == main["metadata"]  # same name, namespace and labels
    spec = monitor["spec"]
    assert set(spec) == {"selector", "podMetricsEndpoints"}  # selector: required by the CRD
    (endpoint,) = spec["podMetricsEndpoints"]
    assert DURATION.match(endpoint["interval"]) and endpoint["path"] == "/metrics"
    for t in templates(main):
        assert "annotations" not in t["metadata"]  # one discovery mechanism, not two
        labels = t["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        ports = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports
    ns = policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]
    assert ns == {"kubernetes.io/metadata.name": "obs"}
    assert to_yaml(objs).count("kind: PodMonitor") == 1


def test_off_means_no_port_no_annotation_no_way_in() -> None:
    main, policy = rendered("job-1node.toml", prometheus="off", log_format="text")
    (t,) = templates(main)
    assert "annotations" not in t["metadata"] and "ports" not in t["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in t["spec"]["containers"][0]["env"]}
    assert "TORCHSHIP_METRICS_PORT" not in env and env["TORCHSHIP_LOG_FORMAT"] == "text"
    assert len(policy["spec"]["ingress"]) == 1
    kubernetes_validate.validate(main, K8S_VERSION, strict=True)


def test_the_jobs_own_env_wins_once() -> None:
    job = load_job(HYBRID / "job-1node.toml")
    job = dataclasses.replace(job, env={**job.env, "TORCHSHIP_LOG_FORMAT": "text"})
    main = render(job, LOCK, "01jobid", options_for(ONPREM))[0]
    env = [e for e in templates(main)[0]["spec"]["containers"][0]["env"]
           if e["name"] == "TORCHSHIP_LOG_FORMAT"]  # fmt: skip
    assert env == [{"name": "TORCHSHIP_LOG_FORMAT", "value": "text"}]


def test_podmonitor_is_created_after_the_policy_and_deleted_on_cancel(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = dataclasses.replace(
        ONPREM, options=dataclasses.replace(ONPREM.options, prometheus="podmonitor")
    )
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path))
    with FakeKube() as kube:
        record(site.name, str(site.kube_context), site.trust, identity_of(kube.api_client()))
        be = KubernetesBackend(site, connector=lambda _ctx: kube.api_client())
        request = be.plan(load_job(HYBRID / "job-1node.toml"), LOCK, "01jobid")
        handle = be.apply(request)
        posts = [p for m, p in kube.requests if m == "POST"]
        monitors = "/apis/monitoring.coreos.com/v1/namespaces/ml/podmonitors"
        assert posts[0].endswith("/networkpolicies") and posts[-1] == monitors
        name = "finetune-1node-01jobid"
        assert kube.objects[f"{monitors}/{name}"] == list(yaml.safe_load_all(request.text))[2]
        be.cancel(handle)
        assert not kube.objects


SITE = """
[[site]]
name = "s"
kind = "{kind}"
trust = "private"
{extra}
"""


@pytest.mark.parametrize(
    ("kind", "extra", "field", "says"),
    [
        ("kubernetes", 'prometheus = "servicemonitor"', "prometheus", "not a way to find pods"),
        ("docker", 'prometheus = "annotations"', "prometheus", "applies to kubernetes"),
        ("skypilot", 'prometheus_namespace = "obs"', "prometheus_namespace", "applies to"),
        ("local", 'log_format = "json"', "log_format", "applies to kubernetes and skypilot"),
        ("kubernetes", 'log_format = "logfmt"', "log_format", "not a log format"),
    ],
)
def test_site_monitoring_fields_are_checked(kind: str, extra: str, field: str, says: str) -> None:
    with pytest.raises(SpecError) as e:
        sites_from_toml(SITE.format(kind=kind, extra=extra), "sites.toml")
    assert e.value.field == f"site[0].{field}" and says in e.value.message
    assert e.value.hint


def test_site_monitoring_defaults() -> None:
    k8s, sky = sites_from_toml(
        SITE.format(kind="kubernetes", extra='context = "c"') + SITE.replace('"s"', '"t"').format(
            kind="skypilot", extra='log_format = "json"\ninfra = "k8s/c"'),
        "sites.toml",
    )  # fmt: skip
    o = k8s.options.to_dict()
    assert (o["prometheus"], o["prometheus_namespace"], o["log_format"]) == (
        "annotations", "monitoring", "json")  # fmt: skip
    assert sky.options.to_dict()["log_format"] == "json"


@pytest.mark.parametrize(
    ("network", "published", "addr"),
    [(None, "127.0.0.1::9402", "0.0.0.0"), ("bridge", "127.0.0.1::9402", "0.0.0.0"),
     ("host", None, "127.0.0.1"), ("none", None, None)],
)  # fmt: skip
def test_docker_site_publishes_the_metrics_port_on_loopback(
    tmp_path: Any, network: str | None, published: str | None, addr: str | None
) -> None:
    o = dataclasses.replace(options("docker"), home=tmp_path, network=network)
    request = DockerBackend(o).plan(load_job(HYBRID / "job-1node.toml"), LOCK, "01jobid")
    argv = list(request.argv)
    ports = [argv[i + 1] for i, a in enumerate(argv) if a == "--publish"]
    assert ports == ([published] if published else [])
    envs = [argv[i + 1] for i, a in enumerate(argv) if a in ("-e", "--env")]
    assert (f"TORCHSHIP_METRICS_ADDR={addr}" in envs) if addr else not any(
        e.startswith("TORCHSHIP_METRICS") for e in envs)  # fmt: skip
