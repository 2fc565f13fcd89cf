"""torchship's Grafana dashboard, built from a table of panels (deploy/grafana/dashboards/
torchship.json is this module's output; `torchship metrics dashboard` prints it).

Three rows: GPUs (per GPU, and per job: utilisation, memory, temperature, power, XIDs — the
DCGM names, so dcgm-exporter's series fill it too), training (throughput, loss, step time,
MFU, gradient norm, progress — the workload's torchship_train_* series) and jobs and cost
(jobs by state, placements, cost per site). Variables: the Prometheus data source, the host
and the torchship job, each "All" by default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

UID = "torchship-overview"
GPU = '{Hostname=~"$host", torchship_job=~"$job"}'
TRAIN = '{torchship_job=~"$job"}'


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 8
    description: str = ""


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("GPUs", (
        Panel("GPU utilisation", ((f"DCGM_FI_DEV_GPU_UTIL{GPU}",
                                   "{{Hostname}} GPU {{gpu}} {{torchship_job}}"),), "percent"),
        Panel("GPU memory used", ((f"DCGM_FI_DEV_FB_USED{GPU}",
                                   "{{Hostname}} GPU {{gpu}}"),), "mbytes"),
        Panel("GPU memory used (share)", ((
            f"DCGM_FI_DEV_FB_USED{GPU} / (DCGM_FI_DEV_FB_USED{GPU} + DCGM_FI_DEV_FB_FREE{GPU})",
            "{{Hostname}} GPU {{gpu}}"),), "percentunit"),
        Panel("GPU temperature", ((f"DCGM_FI_DEV_GPU_TEMP{GPU}",
                                   "{{Hostname}} GPU {{gpu}}"),), "celsius"),
        Panel("GPU power", ((f"DCGM_FI_DEV_POWER_USAGE{GPU}", "{{Hostname}} GPU {{gpu}}"),),
              "watt"),
        Panel("GPU utilisation per job", ((
            'avg by (torchship_job) (DCGM_FI_DEV_GPU_UTIL{Hostname=~"$host", '
            'torchship_job=~"$job", torchship_job!=""})', "{{torchship_job}}"),), "percent",
            description="Mean over the GPUs the job's processes use."),
        Panel("XID errors", ((f"max by (Hostname, gpu) (DCGM_FI_DEV_XID_ERRORS{GPU})",
                              "{{Hostname}} GPU {{gpu}}"),), kind="stat",
              description="The last XID seen per GPU; 0 is none. 79: fell off the bus; "
                          "48/63/64: ECC."),
    )),
    ("Training", (
        Panel("Throughput", ((f"torchship_train_tokens_per_second{TRAIN}",
                              "{{torchship_job}} rank {{rank}}"),), "short",
              description="Global tokens/s over the timed steps, as each node measures it."),
        Panel("Loss", ((f"torchship_train_loss{TRAIN}", "{{torchship_job}}"),)),
        Panel("Step time", (
            ("histogram_quantile(0.5, sum by (le, torchship_job, rank) "
             f"(rate(torchship_train_step_seconds_bucket{TRAIN}[$__rate_interval])))",
             "p50 {{torchship_job}} rank {{rank}}"),
            ("histogram_quantile(0.95, sum by (le, torchship_job, rank) "
             f"(rate(torchship_train_step_seconds_bucket{TRAIN}[$__rate_interval])))",
             "p95 {{torchship_job}} rank {{rank}}"),
        ), "s", description="A rank much slower than the others is a straggler."),
        Panel("MFU", ((f"torchship_train_mfu{TRAIN}", "{{torchship_job}} rank {{rank}}"),),
              "percentunit"),
        Panel("Gradient norm", ((f"torchship_train_grad_norm{TRAIN}", "{{torchship_job}}"),)),
        Panel("Progress", ((f"torchship_train_step{TRAIN} / torchship_train_steps_target{TRAIN}",
                            "{{torchship_job}}"),), "percentunit", kind="stat"),
    )),
    ("Jobs and cost", (
        Panel("Jobs by state", (("sum by (state) (torchship_jobs)", "{{state}}"),), kind="stat"),
        Panel("Placements", (("sum by (site, decision) (increase(torchship_placements_total"
                              "[$__range]))", "{{site}} {{decision}}"),), kind="stat",
              description="Placement decisions in the dashboard's time range."),
        Panel("Cost per site", (("sum by (site) (torchship_cost_usd_total)", "{{site}}"),),
              "currencyUSD", description="Accrued: each job's rate × its time from submission "
                                         "to its end."),
        Panel("Spend rate per site", (("sum by (site) (rate(torchship_cost_usd_total"
                                       "[$__rate_interval])) * 3600", "{{site}}"),),
              "currencyUSD", description="USD per hour, now."),
    )),
)  # fmt: skip


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [{"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
                "legendFormat": legend, "refId": chr(ord("A") + i)}
               for i, (expr, legend) in enumerate(p.exprs)]  # fmt: skip
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "targets": targets,
    }
    if p.kind == "timeseries":
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                            "tooltip": {"mode": "multi"}}  # fmt: skip
    else:
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "values": False},
                            "colorMode": "value", "graphMode": "none"}  # fmt: skip
    return panel


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name}, "definition": query,
        "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }  # fmt: skip


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, pid = 0, 1
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        pid, y, x = pid + 1, y + 1, 0
        for p in row:
            if x + p.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(p, pid, x, y))
            pid, x = pid + 1, x + p.width
        y += 8
    datasource = {"name": "datasource", "label": "Prometheus", "type": "datasource",
                  "query": "prometheus", "current": {}}  # fmt: skip
    return {
        "uid": UID,
        "title": "torchship: GPUs, training, jobs and cost",
        "tags": ["torchship", "gpu", "dcgm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                datasource,
                _variable("host", "Host", "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)"),
                _variable("job", "torchship job", "label_values(torchship_job)"),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"
