"""The dashboard and the scrape configuration against a real Prometheus (Debian's 2.42, started
here): it scrapes the exporter (8 GPUs over the NVML seam's fake, jobs in a real SQLite store)
and the workload's training endpoint, the latter found through torchship's pod annotations by
the relabelling of deploy/prometheus/prometheus.yml; then every query of every dashboard panel
runs in Prometheus and returns series. The committed dashboard is the generator's output."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.podman_env import install_tools
from tests.prom import samples, scrape
from torchship.monitor.dashboard import ROWS, dashboard, dashboard_json
from torchship.monitor.exporter import Collector, serve
from torchship.monitor.gpus import FakeGpus
from torchship.monitor.training import TrainingMetrics
from torchship.state import JobStore

DASHBOARD = REPO / "deploy/grafana/dashboards/torchship.json"
PROM_CONFIG = REPO / "deploy/prometheus/prometheus.yml"
GRAFANA_VARS = {"$host": ".*", "$job": ".*", "$__rate_interval": "10s", "$__range": "1m"}


def test_committed_dashboard_is_the_generators(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--regen-golden"):
        DASHBOARD.write_text(dashboard_json())
    assert DASHBOARD.read_text() == dashboard_json(), "run pytest --regen-golden"


def test_dashboard_cli(tmp_path: Path) -> None:
    assert run_cli("metrics", "dashboard").stdout == DASHBOARD.read_text()
    out = tmp_path / "d.json"
    proc = run_cli("metrics", "dashboard", "-o", str(out))
    assert proc.returncode == 0 and out.read_text() == DASHBOARD.read_text()
    for bad in (tmp_path, tmp_path / "no/such/d.json"):
        proc = run_cli("metrics", "dashboard", "-o", str(bad))
        assert proc.returncode == 2 and "not a file in an existing folder" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2


def test_dashboard_layout_and_variables() -> None:
    d = dashboard()
    panels = d["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "host", "job"]
    titles = {p["title"] for p in panels}
    for wanted in ("GPU utilisation", "GPU memory used", "GPU temperature", "GPU power",
                   "GPU utilisation per job", "Throughput", "Loss", "Cost per site"):  # fmt: skip
        assert wanted in titles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    reason = install_tools(("prometheus",))
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("prom")
    with JobStore(tmp / "jobs.db") as store:
        placed = {"site": "gcp-a3", "decision": "run", "usd_per_hour": 98.32}
        j1, _ = store.submit("k1", "pretrain", {}, site="skypilot", placement=placed)
        store.transition(j1.id, "running")
        j2, _ = store.submit("k2", "finetune", {}, site="local", placement={"site": "local"})
        store.transition(j2.id, "succeeded", exit_code=0)
    # a process of job "job-train" on GPU 3, so the per-job panel has a job to show
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    worker = subprocess.Popen(sleeper, env={"TORCHSHIP_JOB_ID": "job-train"})
    gpus = FakeGpus(8)
    gpus.pids = {3: (worker.pid,)}
    exporter = serve(0, "127.0.0.1", collector=Collector(gpus, lambda: JobStore(tmp / "jobs.db")))
    train = TrainingMetrics("job-train", 0)
    endpoint = train.serve(0, "127.0.0.1")
    assert endpoint is not None
    stop = threading.Event()

    def training() -> None:  # a run that keeps stepping while Prometheus watches
        step = 0
        train.describe_run(device="cpu", backend="gloo", amp="off", compile="off",
                           world_size=1, torch="2.13.0")  # fmt: skip
        while not stop.wait(0.05):
            step += 1
            train.observe_step(0.04 + (step % 5) / 100, 4096)
            train.set(step=step, steps_target=100_000, loss=5 / (1 + step / 100), grad_norm=1.0,
                      learning_rate=1e-3, tokens_per_second=80_000.0, mfu=0.41)  # fmt: skip

    threading.Thread(target=training, daemon=True).start()
    # the repository's configuration, its targets pointed here: the pod job keeps its
    # relabelling and gets a "discovered pod" with torchship's annotations as a static target
    config = yaml.safe_load(PROM_CONFIG.read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        if job["job_name"] == "torchship-node":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter.server_port}"]}]
        if job["job_name"] == "kubernetes-pods":
            del job["kubernetes_sd_configs"]  # Debian builds Prometheus without it
            job["static_configs"] = [{"targets": ["127.0.0.1:1"], "labels": {
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
                "__meta_kubernetes_pod_annotation_prometheus_io_port": str(endpoint.port),
                "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
                "__meta_kubernetes_namespace": "ml",
                "__meta_kubernetes_pod_name": "train-0"}}]  # fmt: skip
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(["promtool", "check", "config", str(tmp / "prometheus.yml")],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"),  # noqa: SIM115
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                targets = api(base, "/api/v1/targets")["activeTargets"]
                if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail((tmp / "prometheus.log").read_text()[-3000:])
        time.sleep(12)  # enough scrapes for rate() over 10 s windows
        yield base, {"exporter": exporter.server_port, "training": endpoint.port}
    finally:
        proc.terminate()
        proc.wait(30)
        stop.set()
        train.close()
        exporter.shutdown()
        worker.kill()
        worker.wait()


@pytest.mark.e2e  # a real Prometheus: with the long end-to-end tests (the suite stays < 10 min)
def test_the_pod_annotations_lead_prometheus_to_the_training_endpoint(
    prometheus: tuple[str, dict[str, int]],
) -> None:
    base, ports = prometheus
    pods = [t for t in api(base, "/api/v1/targets")["activeTargets"]
            if t["labels"]["job"] == "kubernetes-pods"]  # fmt: skip
    assert [t["scrapeUrl"] for t in pods] == [f"http://127.0.0.1:{ports['training']}/metrics"]
    assert pods[0]["labels"]["pod"] == "train-0" and pods[0]["labels"]["namespace"] == "ml"


def _queries() -> Iterator[tuple[str, str]]:
    for _row, panels in ROWS:
        for p in panels:
            for expr, _legend in p.exprs:
                query = expr
                for var, value in GRAFANA_VARS.items():
                    query = query.replace(var, value)
                yield p.title, query


@pytest.mark.e2e  # a real Prometheus: with the long end-to-end tests (the suite stays < 10 min)
@pytest.mark.parametrize(("title", "expr"), list(_queries()), ids=lambda v: str(v)[:40])
def test_every_panel_query_returns_series(
    prometheus: tuple[str, dict[str, int]], title: str, expr: str
) -> None:
    base, _ = prometheus
    result = api(base, "/api/v1/query", query=expr)["result"]
    assert result, f"{title}: {expr} returned nothing"


@pytest.mark.e2e  # a real Prometheus: with the long end-to-end tests (the suite stays < 10 min)
def test_variables_have_values(prometheus: tuple[str, dict[str, int]]) -> None:
    base, _ = prometheus
    hosts = api(base, "/api/v1/label/Hostname/values", **{"match[]": "DCGM_FI_DEV_GPU_UTIL"})
    assert hosts == [socket.gethostname()]
    assert "job-train" in api(base, "/api/v1/label/torchship_job/values")


@pytest.mark.e2e  # a real Prometheus: with the long end-to-end tests (the suite stays < 10 min)
def test_every_metric_the_dashboard_names_is_exported(
    prometheus: tuple[str, dict[str, int]],
) -> None:
    _, ports = prometheus
    exported = set(samples(scrape(ports["exporter"]))) | set(samples(scrape(ports["training"])))
    named = {
        m for _t, expr in _queries() for m in re.findall(r"\b(DCGM_FI_\w+|torchship_\w+)", expr)
    }
    named -= {"torchship_job"}  # a label
    assert named <= exported, named - exported
