"""Placement as a table: policy first (sensitive data never on a public site, even when only
that site has room), local first, burst after the wait budget, the cheapest allowed cloud —
every decision with its reasons. And sites.toml errors name the file and field."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from torchship.errors import SpecError, UsageError
from torchship.place import Demand, SiteLoad, place
from torchship.place.policy import Placer, demand_from_job
from torchship.sites import load_sites, sites_from_toml
from torchship.spec.job import load_job

SITES = load_sites(REPO / "examples/hybrid/sites.toml")  # workstation, onprem, aws-p5, gcp-a2
BUSY = SiteLoad(free_gpus=0, wait_minutes=240)


def demand(**kw: object) -> Demand:
    base: dict[str, object] = {
        "name": "j",
        "gpus_per_node": 4,
        "gpu_models": frozenset({"A100", "H100"}),
        "data_class": "internal",
        "hours": 4.0,
    }
    return Demand(**{**base, **kw})  # type: ignore[arg-type]


def codes(p: object) -> dict[str, str]:
    return {r.site: r.code for r in p.rejected}  # type: ignore[attr-defined]


def test_local_first_when_it_has_room() -> None:
    p = place(demand(), SITES, {})
    assert (p.decision, p.site) == ("run", "workstation")
    assert p.reason.startswith("tier 0: starts in 0 min")


def test_burst_to_the_next_tier_after_the_wait_budget() -> None:
    p = place(demand(), SITES, {"workstation": BUSY})
    assert (p.decision, p.site) == ("run", "onprem")
    assert codes(p)["workstation"] == "wait" and "240 min, over its 30 min budget" in str(
        p.rejected
    )
    p = place(demand(), SITES, {"workstation": BUSY, "onprem": BUSY})
    assert p.site == "gcp-a2"  # the cheapest allowed cloud: 4 GPUs x 4 h x $3.67
    assert codes(p)["aws-p5"] == "cost"
    assert "after the lower tiers' wait budgets ran out" not in p.reason  # two clouds compared
    assert "cheapest of 2" in p.reason


def test_waiting_within_budget_beats_bursting() -> None:
    p = place(demand(), SITES, {"workstation": SiteLoad(0, 20)})
    assert (p.site, p.wait_minutes) == ("workstation", 20)


def test_sensitive_data_never_goes_public_even_when_only_clouds_have_room() -> None:
    full = {"workstation": BUSY, "onprem": BUSY}
    p = place(demand(data_class="sensitive"), SITES, full)
    assert p.decision == "queue" and p.site in ("workstation", "onprem")
    assert codes(p)["aws-p5"] == codes(p)["gcp-a2"] == "data-class"
    assert "sensitive data may not go to aws-p5 (public site" in str(p.rejected)
    # and where no private site could ever run it, it is refused with the reasons
    big = demand(data_class="sensitive", nodes=8, gpus_per_node=8)
    p = place(big, SITES, {})
    assert p.decision == "refused" and p.site is None
    assert codes(p) == {
        "workstation": "gpus-per-node",
        "onprem": "nodes",
        "aws-p5": "data-class",
        "gcp-a2": "data-class",
    }


def test_models_capacity_and_budget_filters() -> None:
    p = place(demand(gpu_models=frozenset({"H100"})), SITES, {})
    assert p.site == "aws-p5" and codes(p)["workstation"] == "gpu-model"
    p = place(demand(nodes=5, gpus_per_node=8), SITES, {})
    assert codes(p)["onprem"] == "nodes" and p.site == "aws-p5"
    p = place(demand(budget_usd=20.0), SITES, {"workstation": BUSY, "onprem": BUSY})
    assert p.decision == "queue" and codes(p)["gcp-a2"] == "over-budget"  # 16 GPU-h x $3.67
    p = place(demand(budget_usd=10.0), SITES, {})
    assert p.decision == "refused" and set(codes(p).values()) == {"over-budget"}


def test_a_site_gets_the_job_only_when_it_reads_one_of_its_data_addresses() -> None:
    """A process reads host paths, a pod a PVC, a SkyPilot VM a bucket: each data entry needs
    an address of the site's form (its path or a mirror), or the site is rejected with why."""
    pvc_only = demand(data_reach=(frozenset({"pvc"}),))
    p = place(pvc_only, SITES, {})
    assert p.site == "onprem" and codes(p)["workstation"] == "data-access"
    assert codes(p)["gcp-a2"] == "data-access"
    why = next(r.reason for r in p.rejected if r.site == "workstation")
    assert why == ("job.data[0] has no path address, the only kind a local site reads "
                   "(it has: pvc); add one to its mirrors")  # fmt: skip
    bucket_only = demand(data_reach=(frozenset({"bucket"}),))
    assert place(bucket_only, SITES, {}).site == "gcp-a2"
    # two entries: both must be reachable
    mixed = demand(data_reach=(frozenset({"path", "pvc"}), frozenset({"path"})))
    p = place(mixed, SITES, {"workstation": BUSY})
    assert p.decision == "queue" and p.site == "workstation"
    assert {codes(p)[s] for s in ("onprem", "aws-p5", "gcp-a2")} == {"data-access"}
    everywhere = demand(data_reach=(frozenset({"path", "pvc", "bucket"}),))
    busy = {"workstation": BUSY, "onprem": BUSY, "aws-p5": BUSY}
    assert place(everywhere, SITES, busy).site == "gcp-a2"


def test_egress_is_paid_away_from_the_data() -> None:
    d = demand(data_gb=1000, data_site="onprem")
    p = place(d, SITES, {"workstation": BUSY, "onprem": BUSY})
    assert p.site == "gcp-a2" and p.cost_usd == pytest.approx(16 * 3.67 + 1000 * 0.12)


def test_examples_hybrid_jobs() -> None:
    one = demand_from_job(load_job(REPO / "examples/hybrid/job-1node.toml"))
    assert (one.gpus, one.data_class, one.hours, one.data_gb) == (4, "internal", 4.0, 200)
    assert place(one, SITES, {}).site == "workstation"
    two = demand_from_job(load_job(REPO / "examples/hybrid/job-2node.toml"))
    p = place(two, SITES, {"onprem": BUSY})
    assert p.decision == "queue" and p.site == "onprem"  # sensitive: waits, never bursts
    d = p.to_dict()
    assert d["rejected"][0] == {
        "site": "workstation",
        "code": "gpus-per-node",
        "reason": "needs 8 GPUs on a node; workstation's largest node has 4",
    }


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('[[site]]\nname = "a"\nkind = "vm"\n', "site[0].kind", "not a site kind"),
        ('[[site]]\nname = "a"\nkind = "local"\nmax_nodes = 2\n', "site[0].max_nodes", "one node"),
        (
            '[[site]]\nname = "a"\nkind = "kubernetes"\ntrust = "private"\ncontext = "c"\n'
            "price_per_gpu_hour = 2\n",
            "site[0].price_per_gpu_hour",
            "needs its date and source",
        ),
        (
            '[[site]]\nname = "a"\nkind = "local"\ngpus = [{ model = "H1000", count = 1 }]\n',
            "site[0].gpus[0].model",
            "H1000",
        ),
        ('[[site]]\nname = "a"\nkind = "local"\ngpus = [{ model = "H100" }]\n', "count", "missing"),
        ('[[site]]\nname = "a"\nkind = "local"\nteir = 1\n', "site[0].teir", "did you mean"),
        (
            '[[site]]\nname = "a"\nkind = "local"\n[[site]]\nname = "a"\nkind = "docker"\n',
            "site",
            "two sites",
        ),
        ("[[site]]\nname = \n", "", "not valid TOML"),
        (
            '[[site]]\nname = "a"\nkind = "kubernetes"\ntrust = "private"\n',
            "site[0].context",
            "names its kubeconfig context",
        ),
        (
            '[[site]]\nname = "a"\nkind = "skypilot"\ntrust = "private"\ninfra = "gcp"\n',
            "site[0].trust",
            "only on infrastructure it names",
        ),
        ('[[site]]\nname = "a"\nkind = "local"\ninfra = "k8s/x"\n', "site[0].infra", "skypilot"),
        ('[[sites]]\nname = "a"\nkind = "local"\n', "", "did you mean [[site]]?"),
    ],
)
def test_sites_file_errors_name_the_field(text: str, field: str, words: str) -> None:
    with pytest.raises(SpecError) as e:
        sites_from_toml(text, "sites.toml")
    assert field in e.value.field and words in f"{e.value} {e.value.hint}", str(e.value)
    assert e.value.hint


def test_missing_sites_file(tmp_path: object) -> None:
    with pytest.raises(UsageError, match="no sites file"):
        load_sites(f"{tmp_path}/nope.toml")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_sites_parser_fuzz(text: str) -> None:
    """Any text: sites or a SpecError, never another exception."""
    with contextlib.suppress(SpecError):
        sites_from_toml(text, "sites.toml")


@settings(max_examples=300, deadline=None)
@given(
    gpus=st.integers(0, 16),
    nodes=st.integers(1, 10),
    cls=st.sampled_from(["public", "internal", "sensitive"]),
    busy=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_placement_never_breaks_policy(gpus: int, nodes: int, cls: str, busy: list[bool]) -> None:
    d = demand(gpus_per_node=gpus, nodes=nodes, data_class=cls)
    loads = {s.name: BUSY for s, b in zip(SITES, busy, strict=True) if b}
    p = place(d, SITES, loads)
    # the why-here record names every site but the chosen one
    assert len({r.site for r in p.rejected} - {p.site if p.decision == "run" else ""}) == len(
        SITES
    ) - (p.decision == "run")
    if p.site is not None:
        site = next(s for s in SITES if s.name == p.site)
        assert cls in site.data_classes  # never a violation
        assert site.max_nodes >= nodes
    if p.decision == "run":
        assert p.wait_minutes <= next(s for s in SITES if s.name == p.site).wait_budget_minutes


def test_demand_defaults() -> None:
    d = dataclasses.replace(demand(), gpus_per_node=0)
    assert place(d, SITES, {}).site == "workstation"  # a CPU job runs locally


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 8),
            st.integers(1, 5),
            st.sampled_from(["public", "internal", "sensitive"]),
            st.one_of(st.none(), st.floats(1, 500)),
            st.lists(st.booleans(), min_size=4, max_size=4),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_a_reused_placer_decides_as_a_fresh_one(
    rows: list[tuple[int, int, str, float | None, list[bool]]],
) -> None:
    """The per-shape cache never changes a decision (budgets and loads are per job)."""
    placer = Placer(SITES)
    for gpus, nodes, cls, budget, busy in rows:
        d = demand(gpus_per_node=gpus, nodes=nodes, data_class=cls, budget_usd=budget)
        loads = {s.name: BUSY for s, b in zip(SITES, busy, strict=True) if b}
        assert placer.place(d, loads).to_dict() == place(d, SITES, loads).to_dict()


def test_cloud_price_table_is_dated_sourced_and_matches_the_example() -> None:
    import datetime as dt

    from torchship.place.prices import catalog, lookup
    from torchship.place.sites import canonical_gpu

    rows = catalog()
    keys = {p.key for p in rows}
    for want in ("aws:p4d.24xlarge", "aws:p5.48xlarge", "aws:g5.xlarge", "gcp:a2-highgpu-1g",
                 "gcp:a3-highgpu-8g", "azure:ND96asr_v4", "azure:ND96isr_H100_v5"):  # fmt: skip
        assert want in keys
    for p in rows:
        assert dt.date.fromisoformat(p.as_of) <= dt.date(2026, 11, 22)
        assert len(p.source) > 20 and p.usd_per_hour > 0 and p.gpus >= 1
        assert canonical_gpu(p.gpu) == p.gpu  # the matrix's own name
    p5 = lookup("AWS:P5.48XLARGE")
    assert p5.price_per_gpu_hour == 6.88
    aws = next(s for s in SITES if s.name == "aws-p5")
    assert aws.price_per_gpu_hour == p5.price_per_gpu_hour
    with pytest.raises(UsageError) as e:
        lookup("aws:p9")
    assert "aws:p5.48xlarge" in e.value.hint
