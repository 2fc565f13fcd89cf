"""Sensitive data never reaches a public cluster, by any path (issue 17, item 5).

Hypothesis draws a sites file (Kubernetes sites of either trust, on any of four kubeconfig
contexts), a kubeconfig (each context pointed at one of three stand-in API servers, any
current context), a job (public, internal or sensitive data, or none), and then one of the
things that go wrong between `site check` and `run`: a context re-pointed at another
cluster, the current context switched, a site's trust flipped, two sites' contexts swapped,
a site added. It runs the real CLI in process (`site check`, `plan`, `run --site auto`) with
the real kubernetes client against the servers, and asserts afterwards that no sensitive job
was created on a cluster that belongs to a public site: one a public site's context reaches,
or one recorded for a public site.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fake_kube import FakeKube, write_kubeconfig
from torchship.cli import main
from torchship.k8s.identity import load_recorded

CONTEXTS = ("ctx0", "ctx1", "ctx2", "ctx3")
CLASSES = ("public", "internal", "sensitive")
MUTATIONS = ("none", "repoint", "switch-current", "flip-trust", "swap-contexts", "add-site")


@pytest.fixture(scope="module")
def servers() -> Iterator[list[FakeKube]]:
    with FakeKube() as a, FakeKube() as b, FakeKube() as c:
        yield [a, b, c]


@st.composite
def site_tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        trust = draw(st.sampled_from(("private", "public")))
        allowed = CLASSES if trust == "private" else CLASSES[:2]
        classes = draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=3, unique=True))
        out.append({
            "name": f"s{i}", "kind": "kubernetes", "trust": trust, "data_classes": classes,
            "tier": draw(st.integers(1, 2)), "context": draw(st.sampled_from(CONTEXTS)),
            "namespace": "ml", "gpus": [{"model": "A100", "count": 8, "per_node": 8}],
        })  # fmt: skip
    return out


def write_sites(path: Path, tables: list[dict[str, Any]]) -> None:
    path.write_text("".join("[[site]]\n" + tomli_w.dumps(t) + "\n" for t in tables))


def job_text(data_class: str | None) -> str:
    text = '[job]\nname = "train"\nworkload = "reference"\ngpus_per_node = 1\n'
    if data_class:
        text += f'\n[[job.data]]\npath = "pvc://d"\nmount = "/data"\nclass = "{data_class}"\n'
    return text


def cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tables=site_tables(),
    targets=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    current=st.sampled_from(CONTEXTS),
    data_class=st.sampled_from(
        (None, *CLASSES, "sensitive", "sensitive")
    ),  # sensitive half the time
    mutation=st.sampled_from(MUTATIONS),
    pick=st.integers(0, 3),
    to=st.integers(0, 2),
)
def test_no_sensitive_job_is_ever_applied_to_a_public_sites_cluster(
    servers: list[FakeKube],
    tmp_path_factory: pytest.TempPathFactory,
    tables: list[dict[str, Any]],
    targets: list[int],
    current: str,
    data_class: str | None,
    mutation: str,
    pick: int,
    to: int,
) -> None:
    folder = tmp_path_factory.mktemp("case")
    for s in servers:
        s.objects.clear()
    urls = dict(zip(CONTEXTS, (servers[t].url for t in targets), strict=True))
    kube, sites, job = folder / "kubeconfig", folder / "sites.toml", folder / "job.toml"
    write_kubeconfig(kube, urls, current)
    write_sites(sites, tables)
    job.write_text(job_text(data_class))
    (folder / "torchship.lock").write_text(
        (Path(__file__).resolve().parents[2] / "examples/hybrid/torchship.lock").read_text()
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(kube))
        mp.setenv("TORCHSHIP_HOME", str(folder / "home"))
        cli("site", "check", "--sites", str(sites))
        # what goes wrong between the check and the run
        victim = tables[pick % len(tables)]
        if mutation == "repoint":
            urls[victim["context"]] = servers[to].url
        elif mutation == "switch-current":
            current = CONTEXTS[to]
        elif mutation == "flip-trust":
            victim["trust"] = "private" if victim["trust"] == "public" else "public"
            victim["data_classes"] = ["public"] if victim["trust"] == "public" else list(CLASSES)
        elif mutation == "swap-contexts" and len(tables) > 1:
            other = tables[(pick + 1) % len(tables)]
            victim["context"], other["context"] = other["context"], victim["context"]
        elif mutation == "add-site":
            tables.append({**victim, "name": "added", "trust": "private",
                           "data_classes": list(CLASSES), "context": CONTEXTS[to]})  # fmt: skip
        write_kubeconfig(kube, urls, current)
        write_sites(sites, tables)
        assert cli("plan", str(job), "--sites", str(sites)) in (0, 1, 2)
        code = cli("run", str(job), "--site", "auto", "--sites", str(sites), "--detach")
        assert code in (0, 1, 2)  # never an internal error
        records = load_recorded()
    public = {urls[t["context"]] for t in tables if t["trust"] == "public"}
    public |= {r.identity.server for r in records.values() if r.trust == "public"}
    for s in servers:
        created = s.find("jobs")
        if created and data_class == "sensitive":
            assert s.url not in public, (tables, urls, mutation, records)
        if code != 0:
            assert not created  # a refused run sent nothing
