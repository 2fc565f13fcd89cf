"""Sites: where jobs can run, as data. `sites.toml` holds one `[[site]]` table per site.

What every kind of site shares is here; what one kind needs (a Kubernetes site's context and
namespace, a SkyPilot site's infra) is its own, parsed and checked by its kind's module
(torchship.backends.<kind>, one line each in torchship.backends.SITE_KINDS) into the site's
`options`. This module names no kind: the kinds are handed in (`kinds`), so placement, which
reads only the shared fields and each site's capabilities, never imports a backend.

[[site]]
name = "onprem-a100"
kind = "kubernetes"               # a key of torchship.backends.SITE_KINDS
tier = 1                          # 0 this machine, 1 on-prem cluster, 2 cloud …: lower tiers first
trust = "private"                 # private (our network) | public (a cloud)
data_classes = ["public", "internal", "sensitive"]
region = "eu-west"
gpus = [{ model = "A100", count = 32, per_node = 8 }]
max_nodes = 4                     # nodes one job may span (1 for a kind that runs one node)
price_per_gpu_hour = 1.10         # amortised capex + power on-prem; catalog price in clouds
price_as_of = "2026-11-01"
price_source = "finance: 4-year amortisation of the DGX A100 nodes + 0.9 kW per GPU"
egress_per_gb = 0.0               # moving data out of the site holding it
wait_budget_minutes = 60          # how long a job may wait here before a higher tier is tried
wait_share = 0.1                  # … or this share of the job's expected run time, when longer
startup_minutes = 0               # time to get capacity when it is free (VM boot, image pull)
queue = "team-a"                  # the site's queue (a Kueue LocalQueue on Kubernetes)
context = "onprem"                # … and the kind's own keys (see its module and docs/sites.md)

Defaults that depend on the kind come from its capabilities: a kind that runs on this machine
(not `remote`) defaults to tier 0 and trust private; a kind that is not `multi_node` runs one
node. Sites of different trust may not share what their options say they reach (a kubeconfig
context, a registry).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torchship._files import parse_toml, read_user_text
from torchship.compat.gpus import lookup_gpu
from torchship.compat.matrix import load_matrix
from torchship.conventions import data_dir
from torchship.errors import SpecError, UnknownGPUError, excerpt
from torchship.spec.job import DATA_CLASSES
from torchship.spec.load import FieldReader

TRUST = ("private", "public")
SHARED_KEYS = (
    "name", "kind", "tier", "trust", "data_classes", "region", "gpus", "max_nodes",
    "price_per_gpu_hour", "price_as_of", "price_source", "egress_per_gb",
    "wait_budget_minutes", "wait_share", "startup_minutes", "queue",
)  # fmt: skip
GPU_KEYS = ("model", "count", "per_node")
SITES_ENV = "TORCHSHIP_SITES"
# What a site's options may say it reaches (SiteOptions.reaches), in the words of the error
# when sites of different trust share one: the public one could reach what the private holds.
KUBE_CONTEXT = "the kubeconfig context"
REGISTRY = "the registry"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a site can do, as data. A kind's module declares its kind's; its backend reports
    its site's (the site's max_nodes, gang scheduling where the site has a queue). The sites
    parser takes defaults and limits from them, placement filters on them."""

    kind: str
    multi_node: bool
    max_nodes: int  # the most nodes one job may span (a kind's own: 1 until a site says more)
    gpus: bool
    gpu_models: tuple[str, ...] = ()  # empty: whatever the site has (checked at preflight)
    containers: bool = False
    spot: bool = False
    gang_scheduling: bool = False
    volumes: tuple[str, ...] = ()  # how data reaches the job: "host-path", "bind", "pvc", "csi"
    restarts: bool = True  # restarts workers from the last checkpoint on failure
    remote: bool = False  # runs elsewhere: this machine's preflight says nothing about it
    # the one form of data address the site reads (torchship.spec.job.data_kind): a process or
    # container reads host paths, a pod a PersistentVolumeClaim, a cloud VM a bucket
    data_reach: str = "path"


class SiteOptions(Protocol):
    """A site's own settings, parsed and owned by its kind's module."""

    def to_dict(self) -> dict[str, Any]: ...

    def reaches(self) -> tuple[tuple[str, str], ...]:
        """(what, name) pairs of what the site's jobs reach outside it (KUBE_CONTEXT,
        REGISTRY, …): sites of different trust may not share one."""
        ...


@dataclass(frozen=True, slots=True)
class NoOptions:
    """The options of a kind that has none (a kind of this machine: local, docker)."""

    def to_dict(self) -> dict[str, Any]:
        return {}

    def reaches(self) -> tuple[tuple[str, str], ...]:
        return ()


NO_OPTIONS = NoOptions()


class SiteKind(Protocol):
    """What the sites parser needs of a kind (torchship.backends.base.SiteKind has it all)."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def option_keys(self) -> tuple[str, ...]: ...

    @property
    def parse_options(self) -> Callable[[FieldReader, str], SiteOptions]:
        """(the site's table as a FieldReader, its trust) → its options; errors as
        `reader.fail(key, problem, hint)`, so they name `sites.toml:site[i].key`."""
        ...

    @property
    def elsewhere(self) -> Mapping[str, str]:
        """Hints for a key of this kind written on another kind's site."""
        ...


@dataclass(frozen=True, slots=True)
class GPUPool:
    model: str  # as the matrix names it ("H100"); "" for a CPU-only site
    count: int  # GPUs of this model at the site in all
    per_node: int  # the most one node has


@dataclass(frozen=True, slots=True)
class Site:
    """What every kind of site shares, its kind's `options`, and its kind's `capabilities`
    (None for a Site made by hand, as simulations do: placement then checks no data reach)."""

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
    options: SiteOptions = NO_OPTIONS
    capabilities: Capabilities | None = None

    def reach(self, what: str) -> str | None:
        """The name of `what` (KUBE_CONTEXT, REGISTRY) the site's jobs reach, if any."""
        return next((name for w, name in self.options.reaches() if w == what), None)

    @property
    def kube_context(self) -> str | None:
        """The kubeconfig context whose cluster the site's jobs reach, if any."""
        return self.reach(KUBE_CONTEXT)

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
            "options": self.options.to_dict(),
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


def _kind(r: FieldReader, kinds: Mapping[str, SiteKind]) -> SiteKind:
    """The site's kind, after refusing keys that are neither shared nor the kind's own: a key
    of another kind says which kinds take it, any other the closest name this site takes."""
    name = r.string("kind", None, 'kind = "kubernetes"') or ""
    if name not in kinds:
        raise r.fail("kind", f"{excerpt(name)} is not a site kind", f"one of: {', '.join(kinds)}")
    kind = kinds[name]
    own = (*SHARED_KEYS, *kind.option_keys)
    for key in r.table:
        if key in own:
            continue
        owners = [k for k in kinds if k != name and key in kinds[k].option_keys]
        if owners:
            hint = kinds[owners[0]].elsewhere.get(key, "remove it")
            raise r.fail(key, f"applies to {' and '.join(owners)} sites, not {name}", hint)
        FieldReader(r.file, {key: r.table[key]}, r.prefix, own)  # unknown: the closest name
    return kind


def site_from_table(
    table: dict[str, Any], file: str, prefix: str, kinds: Mapping[str, SiteKind]
) -> Site:
    r = FieldReader(file, table, prefix, tuple(table) if isinstance(table, dict) else ())
    name = r.string("name", None, 'name = "onprem"')
    if not name:
        raise r.fail("name", "missing", 'add name = "onprem"')
    kind = _kind(r, kinds)
    caps = kind.capabilities
    here = not caps.remote  # this machine: yours, and the first tier
    trust = r.string("trust", "private" if here else None, 'trust = "private"')
    if trust is None:
        raise r.fail(
            "trust",
            "missing: is the site on your network (private) or a cloud (public)?",
            'add trust = "private" or trust = "public"',
        )
    if trust not in TRUST:
        raise r.fail("trust", f"{excerpt(trust)} is not a trust level", "one of: private, public")
    classes = _classes(r, trust)
    tier = r.integer("tier", 0 if here else 1, 0, "tier = 1")
    max_nodes = r.integer("max_nodes", 1, 1, "max_nodes = 4")
    if not caps.multi_node and max_nodes > 1:
        raise r.fail("max_nodes", f"a {kind.name} site runs one node", "set max_nodes = 1")
    options = kind.parse_options(r, trust)
    price = r.number("price_per_gpu_hour", 0, "price_per_gpu_hour = 2.5") or 0.0
    if price and not (table.get("price_as_of") and table.get("price_source")):
        raise r.fail(
            "price_per_gpu_hour",
            "a price needs its date and source",
            'add price_as_of = "2026-11-01" and price_source = "…" (where the figure comes from)',
        )
    return Site(
        name=name,
        kind=kind.name,
        tier=tier,
        trust=trust,
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
        options=options,
        capabilities=caps,
    )


def _classes(r: FieldReader, trust: str) -> tuple[str, ...]:
    default = ("public", "internal", "sensitive") if trust == "private" else ("public",)
    classes = (
        r.strings("data_classes", 'data_classes = ["public", "internal"]')
        if "data_classes" in r.table
        else default
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
    return classes


def registry_host(registry: str) -> str:
    """The host of an image registry prefix: `Registry.example.:443/ml/` → registry.example."""
    host = registry.strip().lower().split("/", 1)[0].rstrip(".")
    return host.removesuffix(":443").rstrip(".")


def _shared_reach(sites: list[Site], file: str) -> None:
    """Sites of different trust reaching one thing (a kubeconfig context, a registry): the
    public one could reach what the private one holds."""
    seen: dict[tuple[str, str], Site] = {}
    for s in sites:
        for key in s.options.reaches():
            other = seen.setdefault(key, s)
            if other.trust != s.trust:
                raise SpecError(
                    file, "site",
                    f"sites {other.name} ({other.trust}) and {s.name} ({s.trust}) share "
                    f"{key[0]} {excerpt(key[1])}",
                    "sites of different trust may not share a cluster or a registry: give "
                    "each its own",
                )  # fmt: skip


def sites_from_toml(text: str, file: str, kinds: Mapping[str, SiteKind]) -> tuple[Site, ...]:
    data = parse_toml(text, file)
    unknown = sorted(set(data) - {"site"})
    if unknown:
        import difflib  # only for a table that is wrong

        close = difflib.get_close_matches(unknown[0].lower(), ["site"], n=1, cutoff=0.5)
        hint = "did you mean [[site]]?" if close else "sites.toml holds [[site]] tables only"
        raise SpecError(file, "", f"unknown table {excerpt(unknown[0])}: it would be ignored", hint)
    raw = data.get("site", [])
    if not isinstance(raw, list) or not raw:
        raise SpecError(file, "site", "no [[site]] tables", "add one: `torchship site add`")
    sites = [site_from_table(table, file, f"site[{i}].", kinds) for i, table in enumerate(raw)]
    names = [s.name for s in sites]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SpecError(
            file, "site", f"two sites are named {excerpt(dup)}", "give each site its own name"
        )
    _shared_reach(sites, file)
    return tuple(sites)


def load_sites(path: str | Path, kinds: Mapping[str, SiteKind]) -> tuple[Site, ...]:
    text = read_user_text(path, "sites file", "create one with `torchship site add`")
    return sites_from_toml(text, str(path), kinds)


def default_sites_path() -> Path:
    """$TORCHSHIP_SITES, else sites.toml in torchship's data dir."""
    env = os.environ.get(SITES_ENV)
    return Path(env) if env else data_dir() / "sites.toml"
