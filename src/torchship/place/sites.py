"""Sites: where jobs can run, as data. `sites.toml` holds one `[[site]]` table per site.

[[site]]
name = "onprem-a100"
kind = "kubernetes"               # local | docker | kubernetes | skypilot
tier = 1                          # 0 local, 1 on-prem cluster, 2 cloud …: lower tiers first
trust = "private"                 # private (our network) | public (a cloud)
data_classes = ["public", "internal", "sensitive"]
region = "eu-west"
gpus = [{ model = "A100", count = 32, per_node = 8 }]
max_nodes = 4                     # nodes one job may span (1 for local and docker)
price_per_gpu_hour = 1.10         # amortised capex + power on-prem; catalog price in clouds
price_as_of = "2026-11-01"
price_source = "finance: 4-year amortisation of the DGX A100 nodes + 0.9 kW per GPU"
egress_per_gb = 0.0               # moving data out of the site holding it
wait_budget_minutes = 60          # how long a job may wait here before a higher tier is tried
wait_share = 0.1                  # … or this share of the job's expected run time, when longer
startup_minutes = 0               # time to get capacity when it is free (VM boot, image pull)
queue = "team-a"                  # a Kueue LocalQueue, when the cluster has Kueue
context = "onprem"                # kubeconfig context (kubernetes: required, its cluster recorded)
namespace = "ml"
operator = "jobset"               # multi-node objects: jobset | kubeflow
checkpoint_claim = "ml-runs"      # a PVC for run folders, so a retried pod resumes (kubernetes)
prometheus = "annotations"        # how Prometheus finds job pods: annotations | podmonitor | off
prometheus_namespace = "monitoring"  # where Prometheus runs: the job's NetworkPolicy lets it in
log_format = "json"               # job logs: json (Loki, ELK) or text (kubernetes, skypilot)
infra = "k8s/onprem"              # skypilot: where SkyPilot runs it (a private one must name it)
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchship._files import parse_toml, read_user_text
from torchship.compat.gpus import lookup_gpu
from torchship.compat.matrix import load_matrix
from torchship.errors import SpecError, UnknownGPUError, excerpt
from torchship.spec.job import DATA_CLASSES
from torchship.spec.load import FieldReader

KINDS = ("local", "docker", "kubernetes", "skypilot")
TRUST = ("private", "public")
OPERATORS = ("jobset", "kubeflow")
SITE_KEYS = (
    "name", "kind", "tier", "trust", "data_classes", "region", "gpus", "max_nodes",
    "price_per_gpu_hour", "price_as_of", "price_source", "egress_per_gb",
    "wait_budget_minutes", "wait_share", "startup_minutes", "queue", "context", "namespace",
    "operator", "registry", "checkpoint_claim", "prometheus", "prometheus_namespace", "log_format",
    "infra",
)  # fmt: skip
# SkyPilot infra that is yours, named: a kubeconfig context or an SSH node pool. A SkyPilot site
# may be private only on these (anything else is a cloud SkyPilot may provision in).
PRIVATE_INFRA = ("k8s/", "ssh/")  # after normal_infra
PROMETHEUS_MODES = ("annotations", "podmonitor", "off")
LOG_FORMATS = ("json", "text")
# log_format's default per kind: cluster logs go to a collector; SkyPilot's and the local
# machine's come back to this machine's run folder, read by people (`torchship logs`)
DEFAULT_LOG_FORMAT = {"kubernetes": "json", "skypilot": "text"}
GPU_KEYS = ("model", "count", "per_node")
SINGLE_NODE_KINDS = frozenset({"local", "docker"})
# The form of data address each kind of site reads (torchship.spec.job.data_kind): a process
# or container reads host paths, a Kubernetes pod a PersistentVolumeClaim (never hostPath), a
# SkyPilot VM a bucket it mounts.
DATA_REACH = {"local": "path", "docker": "path", "kubernetes": "pvc", "skypilot": "bucket"}


@dataclass(frozen=True, slots=True)
class GPUPool:
    model: str  # as the matrix names it ("H100"); "" for a CPU-only site
    count: int  # GPUs of this model at the site in all
    per_node: int  # the most one node has


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    kind: str
    tier: int
    trust: str
    data_classes: frozenset[str]
    region: str = ""
    gpus: tuple[GPUPool, ...] = ()
    max_nodes: int = 1
    price_per_gpu_hour: float = 0.0
    price_as_of: str = ""
    price_source: str = ""
    egress_per_gb: float = 0.0
    wait_budget_minutes: float = 0.0
    wait_share: float = 0.0  # or this share of the job's run time, when longer
    startup_minutes: float = 0.0
    queue: str | None = None
    context: str | None = None
    namespace: str = "default"
    operator: str = "jobset"
    registry: str = ""
    checkpoint_claim: str | None = None
    prometheus: str = "annotations"  # kubernetes: annotations | podmonitor | off
    prometheus_namespace: str = "monitoring"
    log_format: str = ""  # kubernetes and skypilot: json | text; "" elsewhere (set by the job)
    infra: str = ""  # skypilot: its resources.infra ("aws/us-east-1", "k8s/onprem", "ssh/pool")

    @property
    def kube_context(self) -> str | None:
        """The kubeconfig context whose cluster the site's jobs reach, if any."""
        if self.kind == "kubernetes":
            return self.context
        return self.infra.removeprefix("k8s/") if self.infra.startswith("k8s/") else None

    @property
    def total_gpus(self) -> int:
        return sum(g.count for g in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "tier": self.tier,
            "trust": self.trust,
            "data_classes": sorted(self.data_classes),
            "region": self.region,
            "gpus": [
                {"model": g.model, "count": g.count, "per_node": g.per_node} for g in self.gpus
            ],
            "max_nodes": self.max_nodes,
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "price_as_of": self.price_as_of,
            "price_source": self.price_source,
            "egress_per_gb": self.egress_per_gb,
            "wait_budget_minutes": self.wait_budget_minutes,
            "wait_share": self.wait_share,
            "startup_minutes": self.startup_minutes,
            "queue": self.queue,
        }


def canonical_gpu(name: str) -> str:
    """The matrix's name for a GPU ("h100-80gb" → "H100"); UnknownGPUError when it has none."""
    t = lookup_gpu(load_matrix(), name)
    return t.gpu.name if t.gpu else name


def _gpus(r: FieldReader) -> tuple[GPUPool, ...]:
    out = []
    for g in r.tables("gpus", GPU_KEYS, 'gpus = [{ model = "H100", count = 8 }]'):
        model = g.string("model", None, 'model = "H100"')
        if not model:
            raise g.fail("model", "missing", 'add model = "H100"')
        try:
            model = canonical_gpu(model)
        except UnknownGPUError as e:
            raise g.fail("model", e.message, e.hint) from None
        if "count" not in g.table:
            raise g.fail("count", "missing", "add count = 8")
        count = g.integer("count", 0, 1, "count = 8")
        per_node = g.integer("per_node", min(count, 8), 1, "per_node = 8")
        if per_node > count:
            raise g.fail("per_node", f"{per_node} is more than count = {count}", "lower it")
        out.append(GPUPool(model, count, per_node))
    return tuple(out)


def site_from_table(table: dict[str, Any], file: str, prefix: str) -> Site:
    r = FieldReader(file, table, prefix, SITE_KEYS)
    name = r.string("name", None, 'name = "onprem"')
    if not name:
        raise r.fail("name", "missing", 'add name = "onprem"')
    kind = r.string("kind", None, 'kind = "kubernetes"') or ""
    if kind not in KINDS:
        raise r.fail("kind", f"{excerpt(kind)} is not a site kind", f"one of: {', '.join(KINDS)}")
    trust = r.string("trust", "private" if kind in SINGLE_NODE_KINDS else None, 'trust = "private"')
    if trust is None:
        raise r.fail(
            "trust",
            "missing: is the site on your network (private) or a cloud (public)?",
            'add trust = "private" or trust = "public"',
        )
    if trust not in TRUST:
        raise r.fail("trust", f"{excerpt(trust)} is not a trust level", "one of: private, public")
    default_classes = ("public", "internal", "sensitive") if trust == "private" else ("public",)
    classes = (
        r.strings("data_classes", 'data_classes = ["public", "internal"]')
        if ("data_classes" in table)
        else default_classes
    )
    if trust == "public" and "sensitive" in classes:
        raise r.fail(
            "data_classes",
            "a public site may not accept sensitive data",
            'remove "sensitive", or set trust = "private" if the site is on your network',
        )
    for c in classes:
        if c not in DATA_CLASSES:
            raise r.fail(
                "data_classes", f"unknown data class {excerpt(c)}", f"use {', '.join(DATA_CLASSES)}"
            )
    tier = r.integer("tier", 0 if kind in SINGLE_NODE_KINDS else 1, 0, "tier = 1")
    max_nodes = r.integer("max_nodes", 1, 1, "max_nodes = 4")
    if kind in SINGLE_NODE_KINDS and max_nodes > 1:
        raise r.fail("max_nodes", f"a {kind} site runs one node", "set max_nodes = 1")
    operator = r.string("operator", "jobset", 'operator = "jobset"') or "jobset"
    if operator not in OPERATORS:
        raise r.fail(
            "operator", f"{excerpt(operator)} is not supported", "one of: jobset, kubeflow"
        )
    prometheus, log_format = _monitoring(r, kind)
    context, infra = _cluster(r, kind, str(trust))
    price = r.number("price_per_gpu_hour", 0, "price_per_gpu_hour = 2.5") or 0.0
    if price and not (table.get("price_as_of") and table.get("price_source")):
        raise r.fail(
            "price_per_gpu_hour",
            "a price needs its date and source",
            'add price_as_of = "2026-11-01" and price_source = "…" (where the figure comes from)',
        )
    return Site(
        name=name,
        kind=kind,
        tier=tier,
        trust=str(trust),
        data_classes=frozenset(classes),
        region=r.string("region", "", 'region = "eu-west"') or "",
        gpus=_gpus(r),
        max_nodes=max_nodes,
        price_per_gpu_hour=price,
        price_as_of=r.string("price_as_of", "", 'price_as_of = "2026-11-01"') or "",
        price_source=r.string("price_source", "", 'price_source = "…"') or "",
        egress_per_gb=r.number("egress_per_gb", 0, "egress_per_gb = 0.09") or 0.0,
        wait_budget_minutes=r.number("wait_budget_minutes", 0, "wait_budget_minutes = 30") or 0.0,
        wait_share=r.number("wait_share", 0, "wait_share = 0.1") or 0.0,
        startup_minutes=r.number("startup_minutes", 0, "startup_minutes = 5") or 0.0,
        queue=r.string("queue", None, 'queue = "team-a"'),
        context=context,
        namespace=r.string("namespace", "default", 'namespace = "ml"') or "default",
        operator=operator,
        registry=r.string("registry", "", 'registry = "registry.example.com/team/"') or "",
        checkpoint_claim=r.string("checkpoint_claim", None, 'checkpoint_claim = "ml-runs"'),
        prometheus=prometheus,
        prometheus_namespace=r.string(
            "prometheus_namespace", "monitoring", 'prometheus_namespace = "monitoring"'
        )
        or "monitoring",
        log_format=log_format,
        infra=infra,
    )


def _cluster(r: FieldReader, kind: str, trust: str) -> tuple[str | None, str]:
    """(context, infra): the cluster a Kubernetes site is bound to (its context, named: the
    current context can change under it), and where a SkyPilot site runs."""
    context = r.string("context", None, 'context = "onprem"')
    if kind == "kubernetes" and not context:
        raise r.fail(
            "context",
            "missing: a Kubernetes site names its kubeconfig context (the current one changes "
            "with `kubectl config use-context`)",
            'add context = "onprem" (see `kubectl config get-contexts`)',
        )
    if context and kind != "kubernetes":
        raise r.fail(
            "context",
            f"applies to kubernetes sites, not {kind}",
            'remove it (a SkyPilot site names its cluster: infra = "k8s/CONTEXT")',
        )
    infra = normal_infra(r.string("infra", "", 'infra = "k8s/onprem"') or "")
    if infra and kind != "skypilot":
        raise r.fail("infra", f"applies to skypilot sites, not {kind}", "remove it")
    if infra and ("region" in r.table or any(c.isspace() or c == "*" for c in infra)):
        raise r.fail("infra", "give the region inside infra, not beside it, and no spaces or *",
                     'e.g. infra = "aws/us-east-1", and remove region')  # fmt: skip
    cloud, _, rest = infra.partition("/")
    if rest.startswith("/") or rest.endswith("/"):
        raise r.fail("infra", f"{excerpt(infra)} has an empty part", 'e.g. infra = "k8s/onprem"')
    if cloud == "k8s" and not rest:
        raise r.fail(
            "infra",
            "names no context: SkyPilot would run on any allowed context, yours included",
            'name it: infra = "k8s/<context>"',
        )
    named = infra.startswith(PRIVATE_INFRA) and bool(rest)
    if kind == "skypilot" and trust == "private" and not named:
        raise r.fail(
            "trust",
            "a SkyPilot site is private only on infrastructure it names as yours "
            f"(infra = {excerpt(infra or 'none')}: SkyPilot may provision in any enabled cloud)",
            'add infra = "k8s/<context>" or "ssh/<node pool>", or set trust = "public"',
        )
    return context, infra


def normal_infra(text: str) -> str:
    """SkyPilot's infra as SkyPilot reads it: outer slashes dropped, the cloud lower case,
    `kubernetes` spelt `k8s` (the context after it keeps its case)."""
    cloud, sep, rest = text.strip().strip("/").partition("/")
    cloud = cloud.lower()
    return ("k8s" if cloud == "kubernetes" else cloud) + sep + rest


def registry_host(registry: str) -> str:
    """The host of an image registry prefix: `Registry.example.:443/ml/` → registry.example."""
    host = registry.strip().lower().split("/", 1)[0].rstrip(".")
    return host.removesuffix(":443").rstrip(".")


def _shared_cluster(sites: list[Site], file: str) -> None:
    """Sites of different trust on one cluster (a kubeconfig context) or one registry: the
    public one could reach what the private one holds."""
    seen: dict[tuple[str, str], Site] = {}
    for s in sites:
        keys = []
        if s.kube_context:
            keys.append(("the kubeconfig context", s.kube_context))
        if s.registry:
            keys.append(("the registry", registry_host(s.registry)))
        for key in keys:
            other = seen.setdefault(key, s)
            if other.trust != s.trust:
                raise SpecError(
                    file, "site",
                    f"sites {other.name} ({other.trust}) and {s.name} ({s.trust}) share "
                    f"{key[0]} {excerpt(key[1])}",
                    "sites of different trust may not share a cluster or a registry: give "
                    "each its own",
                )  # fmt: skip


def _monitoring(r: FieldReader, kind: str) -> tuple[str, str]:
    """(prometheus, log_format): how Prometheus finds the site's jobs, how their logs read."""
    prometheus = r.string("prometheus", "annotations", 'prometheus = "podmonitor"') or ""
    if prometheus not in PROMETHEUS_MODES:
        raise r.fail("prometheus", f"{excerpt(prometheus)} is not a way to find pods",
                     f"one of: {', '.join(PROMETHEUS_MODES)}")  # fmt: skip
    for key in ("prometheus", "prometheus_namespace"):
        if key in r.table and kind != "kubernetes":
            raise r.fail(key, f"applies to kubernetes sites, not {kind}",
                         "remove it; other sites publish the port as the docs say")  # fmt: skip
    default = DEFAULT_LOG_FORMAT.get(kind, "")
    log_format = r.string("log_format", default, 'log_format = "json"') or ""
    if "log_format" in r.table and not default:
        raise r.fail("log_format", f"applies to kubernetes and skypilot sites, not {kind}",
                     'set TORCHSHIP_LOG_FORMAT = "json" in the job\'s [job.env]')  # fmt: skip
    if log_format not in (*LOG_FORMATS, ""):
        raise r.fail(
            "log_format", f"{excerpt(log_format)} is not a log format", "one of: json, text"
        )
    return prometheus, log_format


def sites_from_toml(text: str, file: str) -> tuple[Site, ...]:
    data = parse_toml(text, file)
    unknown = sorted(set(data) - {"site"})
    if unknown:
        close = difflib.get_close_matches(unknown[0].lower(), ["site"], n=1, cutoff=0.5)
        hint = "did you mean [[site]]?" if close else "sites.toml holds [[site]] tables only"
        raise SpecError(file, "", f"unknown table {excerpt(unknown[0])}: it would be ignored", hint)
    raw = data.get("site", [])
    if not isinstance(raw, list) or not raw:
        raise SpecError(file, "site", "no [[site]] tables", "add one: `torchship site add`")
    sites = []
    for i, table in enumerate(raw):
        sites.append(site_from_table(table, file, f"site[{i}]."))
    names = [s.name for s in sites]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SpecError(
            file, "site", f"two sites are named {excerpt(dup)}", "give each site its own name"
        )
    _shared_cluster(sites, file)
    return tuple(sites)


def load_sites(path: str | Path) -> tuple[Site, ...]:
    text = read_user_text(path, "sites file", "create one with `torchship site add`")
    return sites_from_toml(text, str(path))


def default_sites_path() -> Path:
    """$TORCHSHIP_SITES, else sites.toml in torchship's data dir."""
    from torchship.state import data_dir

    env = os.environ.get("TORCHSHIP_SITES")
    return Path(env) if env else data_dir() / "sites.toml"


def sites_or_default(path: str | Path | None) -> tuple[tuple[Site, ...], str]:
    """The sites of `path` (or the default file); with no file at the default path, the
    embedded default: this machine only."""
    if path is not None:
        return load_sites(path), str(path)
    default = default_sites_path()
    if default.exists():
        return load_sites(default), str(default)
    return (LOCAL,), "the embedded default (this machine only)"


LOCAL = Site(name="local", kind="local", tier=0, trust="private",
             data_classes=frozenset(DATA_CLASSES))  # fmt: skip
