"""Placement, pure and explained: policy first, then tiers, then cost.

    place(demand, sites, loads) -> Placement

1. Hard filters, per site, in this order (the first that fails is the reason given):
   data class against the site's allowed classes (public sites never get sensitive data, even
   when only they have room), GPU model, GPUs per node, nodes, total capacity, data access
   (the site reads one of the data's addresses: host path, PVC or bucket), budget.
2. Ordered tiers: the lowest tier whose sites can start the job within their wait budget wins;
   a higher tier is tried only when every allowed site of the lower ones would make it wait
   longer than its budget ("burst").
3. Cost, within that tier: GPU-hours × price + egress of the data it reads (when the site is
   not where the data lives), then the shorter wait, then the name.

When no tier can start the job within budget, the job queues where it will start soonest
(decision "queue"); when no site passes the filters, it is refused with every reason. The
Placement keeps every rejected site and why: the "why here" record stored with the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from torchship.errors import UnknownGPUError
from torchship.place.sites import Site, canonical_gpu
from torchship.spec.job import JobSpec

SENSITIVITY = {"public": 0, "internal": 1, "sensitive": 2}


@dataclass(frozen=True, slots=True)
class Demand:
    """What placement needs to know of a job (from a JobSpec, or a trace row)."""

    name: str
    gpus_per_node: int
    nodes: int = 1
    gpu_models: frozenset[str] = frozenset()  # canonical names; empty: any
    data_class: str = "public"  # the most sensitive class it reads
    hours: float = 1.0  # expected run time (max_runtime_minutes, or the trace's duration)
    data_gb: float = 0.0
    data_site: str | None = None  # where its data lives (egress is free there)
    budget_usd: float | None = None
    data_reach: tuple[frozenset[str], ...] = ()  # per data entry: how it can be reached

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True, slots=True)
class SiteLoad:
    """A site's state when placing: free GPUs now, and the wait until this job would start."""

    free_gpus: int
    wait_minutes: float = 0.0
    # jobs are already waiting there (a batch queue): a new one waits too, whatever it asks for
    backlog: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    site: str
    # data-class | data-access | gpu-model | gpus-per-node | nodes | capacity | over-budget
    # | wait | cost | tier
    code: str
    reason: str


class Rejections(Sequence[Rejection]):
    """A placement's rejected sites, every one with its reason, in order: built when first read
    (most placements are never explained), then kept. Reads like a tuple and equals one."""

    __slots__ = ("_build", "_items")

    def __init__(self, build: Callable[[], tuple[Rejection, ...]]) -> None:
        self._build: Callable[[], tuple[Rejection, ...]] | None = build
        self._items: tuple[Rejection, ...] = ()

    def _all(self) -> tuple[Rejection, ...]:
        if self._build is not None:
            self._items, self._build = self._build(), None
        return self._items

    @overload
    def __getitem__(self, i: int) -> Rejection: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Rejection, ...]: ...
    def __getitem__(self, i: int | slice) -> Rejection | tuple[Rejection, ...]:
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[Rejection]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rejections | tuple):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


@dataclass(frozen=True, slots=True)
class Placement:
    job: str
    decision: str  # run | queue | refused
    site: str | None
    reason: str
    cost_usd: float = 0.0
    wait_minutes: float = 0.0
    rejected: Sequence[Rejection] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "decision": self.decision,
            "site": self.site,
            "reason": self.reason,
            "cost_usd": round(self.cost_usd, 2),
            "wait_minutes": round(self.wait_minutes, 1),
            "rejected": [
                {"site": r.site, "code": r.code, "reason": r.reason} for r in self.rejected
            ],
        }


def cost(d: Demand, s: Site) -> float:
    egress = 0.0 if d.data_site in (None, s.name) else d.data_gb * _egress_price(d, s)
    return d.gpus * d.hours * s.price_per_gpu_hour + egress


def _egress_price(d: Demand, s: Site) -> float:
    # Moving data is paid where it leaves; with no inventory of the data's home here, the
    # destination's egress price stands in (clouds charge both ways about alike).
    return s.egress_per_gb


def _usable(d: Demand, s: Site) -> tuple[int, int]:
    """(GPUs of an accepted model at the site, the most of them on one node)."""
    total = per_node = 0
    for g in s.gpus:
        if not d.gpu_models or g.model in d.gpu_models:
            total += g.count
            per_node = max(per_node, g.per_node)
    return total, per_node


def hard_filter(d: Demand, s: Site) -> Rejection | None:
    """The first policy, fit or budget rule the site breaks for this job, or None."""
    return fit_filter(d, s) or budget_filter(d, s)


def fit_filter(d: Demand, s: Site) -> Rejection | None:
    """Data class, GPU model, GPUs per node, nodes, capacity: these depend only on the job's
    shape, so a Placer decides them once per shape."""
    if d.data_class not in s.data_classes:
        allowed = ", ".join(sorted(s.data_classes, key=SENSITIVITY.__getitem__))
        return Rejection(
            s.name,
            "data-class",
            f"{d.data_class} data may not go to {s.name} ({s.trust} site; allows {allowed})",
        )
    if d.gpus_per_node:
        total, per_node = _usable(d, s)
        if total == 0:
            want = ", ".join(sorted(d.gpu_models)) or "any GPU"
            have = ", ".join(sorted({g.model for g in s.gpus})) or "no GPUs"
            return Rejection(s.name, "gpu-model", f"needs {want}; {s.name} has {have}")
        if per_node < d.gpus_per_node:
            return Rejection(
                s.name,
                "gpus-per-node",
                f"needs {d.gpus_per_node} GPUs on a node; {s.name}'s largest node has {per_node}",
            )
        if d.nodes > s.max_nodes:
            return Rejection(
                s.name, "nodes", f"needs {d.nodes} nodes; {s.name} runs at most {s.max_nodes}"
            )
        if total < d.gpus:
            return Rejection(
                s.name, "capacity", f"needs {d.gpus} GPUs; {s.name} has {total} in all"
            )
    elif d.nodes > s.max_nodes:
        return Rejection(
            s.name, "nodes", f"needs {d.nodes} nodes; {s.name} runs at most {s.max_nodes}"
        )
    return data_filter(d, s)


def data_filter(d: Demand, s: Site) -> Rejection | None:
    """Every data entry has an address of the one form this kind of site reads (its
    capabilities say which; a Site made by hand, without them, is not checked)."""
    if s.capabilities is None:
        return None
    reach = s.capabilities.data_reach
    for i, kinds in enumerate(d.data_reach):
        if reach not in kinds:
            return Rejection(
                s.name,
                "data-access",
                f"job.data[{i}] has no {reach} address, the only kind a {s.kind} site reads "
                f"(it has: {', '.join(sorted(kinds))}); add one to its mirrors",
            )
    return None


def budget_filter(d: Demand, s: Site) -> Rejection | None:
    if d.budget_usd is None:
        return None
    c = cost(d, s)
    if c <= d.budget_usd:
        return None
    return Rejection(
        s.name, "over-budget", f"would cost ${c:,.2f}, over the ${d.budget_usd:,.2f} budget"
    )


def wait_minutes(d: Demand, s: Site, load: SiteLoad | None) -> float:
    """When the job would start here: now (plus start-up) if the GPUs are free and no job
    waits ahead of it, else the site's estimate. A site with no load given is taken as idle."""
    if load is None or (load.free_gpus >= d.gpus and not load.backlog):
        return s.startup_minutes
    return max(load.wait_minutes, 0.0) + s.startup_minutes


Shape = tuple[str, frozenset[str], int, int, tuple[frozenset[str], ...]]


class Placer:
    """Places jobs on one set of sites. The fit filters depend only on a job's shape (data
    class, accepted models, GPUs per node, nodes), so their verdicts are kept per shape: a
    stream of jobs costs one pass over the sites per shape, then only budgets, waits and costs.
    """

    def __init__(self, sites: Sequence[Site]) -> None:
        self.sites = tuple(sites)
        self._shapes: dict[Shape, tuple[tuple[Rejection, ...], tuple[Site, ...]]] = {}
        self._tiers: dict[tuple[str, int], Rejection] = {}
        # id() of a shape's allowed tuple: those tuples live in _shapes as long as the placer
        self._later_cache: dict[tuple[int, int, int], tuple[Rejection, ...]] = {}

    def _not_needed(self, s: Site, tier: int) -> Rejection:
        r = self._tiers.get((s.name, tier))
        if r is None:
            why = f"tier {s.tier}: not needed, tier {tier} has room"
            r = self._tiers[(s.name, tier)] = Rejection(s.name, "tier", why)
        return r

    def _record(
        self,
        rejected: list[Rejection],
        ready: list[tuple[float, float, str, Site]],
        allowed: Sequence[Site],
        i: int,
        tier: int,
    ) -> Rejections:
        """The why-not of a placement that runs: what was rejected so far, the dearer sites of
        the chosen tier, and the tiers above it, written when read."""
        c, _, best, _ = ready[0]

        def build() -> tuple[Rejection, ...]:
            dearer = tuple(
                Rejection(name, "cost", f"${c2:,.2f} against ${c:,.2f} at {best}")
                for c2, _, name, _ in ready[1:]
            )
            return (*rejected, *dearer, *self._later(allowed, i, tier))

        return Rejections(build)

    def _later(self, allowed: Sequence[Site], i: int, tier: int) -> tuple[Rejection, ...]:
        """Rejections "not needed" for the sites of the tiers above the chosen one; kept per
        shape when `allowed` is a shape's cached tuple (no budget filtered it)."""
        key = (id(allowed), i, tier)
        hit = self._later_cache.get(key) if isinstance(allowed, tuple) else None
        if hit is None:
            hit = tuple(self._not_needed(later, tier) for later in allowed[i:])
            if isinstance(allowed, tuple):
                self._later_cache[key] = hit
        return hit

    def _fit(self, d: Demand) -> tuple[tuple[Rejection, ...], tuple[Site, ...]]:
        key = (d.data_class, d.gpu_models, d.gpus_per_node, d.nodes, d.data_reach)
        hit = self._shapes.get(key)
        if hit is None:
            rejected: list[Rejection] = []
            allowed: list[Site] = []
            for s in self.sites:
                r = fit_filter(d, s)
                if r is None:
                    allowed.append(s)
                else:
                    rejected.append(r)
            allowed.sort(key=lambda s: s.tier)  # stable: sites-file order within a tier
            hit = self._shapes[key] = (tuple(rejected), tuple(allowed))
        return hit

    def place(self, d: Demand, loads: Mapping[str, SiteLoad] | None = None) -> Placement:
        loads = loads or {}
        unfit, fitting = self._fit(d)
        rejected = list(unfit)
        allowed: Sequence[Site] = fitting
        if d.budget_usd is not None:  # budget_filter, inlined
            allowed = []
            budget = d.budget_usd
            for s in fitting:
                c = cost(d, s)
                if c <= budget:
                    allowed.append(s)
                else:
                    why = f"would cost ${c:,.2f}, over the ${budget:,.2f} budget"
                    rejected.append(Rejection(s.name, "over-budget", why))
        if not allowed:
            codes = sorted({r.code for r in rejected})
            why = f"no site may run it ({', '.join(codes)})"
            return Placement(d.name, "refused", None, why, 0.0, 0.0, tuple(rejected))
        lowest = allowed[0].tier
        i, n = 0, len(allowed)
        while i < n:
            tier = allowed[i].tier
            j = i
            while j < n and allowed[j].tier == tier:
                j += 1
            ready = _ready(d, allowed[i:j], loads, rejected)
            i = j
            if not ready:
                continue
            ready.sort()  # by cost, wait, name: names are unique, so no Site is ever compared
            c, w, _, best = ready[0]
            record = self._record(rejected, ready, allowed, i, tier)
            why = f"tier {tier}: starts in {w:.0f} min (budget {wait_budget(d, best):.0f})"
            if len(ready) > 1:
                why += f", cheapest of {len(ready)} (${c:,.2f})"
            elif tier > lowest:
                why += f", after the lower tiers' wait budgets ran out (${c:,.2f})"
            else:
                why += f" (${c:,.2f})"
            return Placement(d.name, "run", best.name, why, c, w, record)
        waits = [(wait_minutes(d, s, loads.get(s.name)), s.tier, s.name, s) for s in allowed]
        w, _, name, site = min(waits, key=lambda t: t[:3])
        why = "every allowed site would wait past its budget; "
        why += f"queued where it starts soonest ({w:.0f} min)"
        return Placement(d.name, "queue", name, why, cost(d, site), w, tuple(rejected))


def _ready(
    d: Demand, tier: Sequence[Site], loads: Mapping[str, SiteLoad], rejected: list[Rejection]
) -> list[tuple[float, float, str, Site]]:
    """(cost, wait, name, site) of the tier's sites that start the job within their budget;
    the others go to `rejected`. wait_minutes, wait_budget and cost inlined: this loop is
    the placer's time."""
    gpus, minutes, gpu_hours = d.gpus, d.hours * 60, d.gpus * d.hours
    home, data_gb = d.data_site, d.data_gb
    ready = []
    for s in tier:
        name = s.name
        load = loads.get(name)
        w = s.startup_minutes
        if load is not None and (load.free_gpus < gpus or load.backlog) and load.wait_minutes > 0:
            w += load.wait_minutes
        budget = s.wait_budget_minutes
        share = s.wait_share * minutes
        budget = max(budget, share)
        if w <= budget:
            c = gpu_hours * s.price_per_gpu_hour
            if home is not None and home != name:
                c += data_gb * s.egress_per_gb
            ready.append((c, w, name, s))
        else:
            rejected.append(Rejection(name, "wait", _wait_reason(w, budget)))
    return ready


def _wait_reason(w: float, budget: float) -> str:
    return f"would wait {w:.0f} min, over its {budget:.0f} min budget"


def wait_budget(d: Demand, s: Site) -> float:
    """Minutes the job may wait at `s` before a higher tier is tried: the site's budget, or
    its `wait_share` of the job's expected run time when that is longer (a week-long job is not
    worth sending to a cloud at several times the price to save an hour)."""
    return max(s.wait_budget_minutes, s.wait_share * d.hours * 60)


def place(
    d: Demand, sites: Sequence[Site], loads: Mapping[str, SiteLoad] | None = None
) -> Placement:
    """One job, once. For many jobs over the same sites, use a Placer."""
    return Placer(sites).place(d, loads)


def demand_from_job(job: JobSpec, default_hours: float = 1.0) -> Demand:
    """A job's demand: GPU models in the matrix's names, its most sensitive data class, its
    max runtime as the expected duration (else `default_hours`), the data it reads."""
    models = set()
    for m in job.gpu_models:
        try:
            models.add(canonical_gpu(m))
        except UnknownGPUError:
            models.add(m)  # the job spec already named the field; an unknown model matches none
    hours = job.max_runtime_minutes / 60 if job.max_runtime_minutes else default_hours
    return Demand(
        name=job.name,
        gpus_per_node=job.gpus_per_node,
        nodes=job.nodes,
        gpu_models=frozenset(models),
        data_class=job.sensitivity,
        hours=hours,
        data_gb=sum(d.size_gb for d in job.data),
        budget_usd=job.budget_usd,
        data_reach=tuple(d.kinds for d in job.data),
    )
