"""One kind of site, one module (issue 19 item 4): a kind is its module, its tests, its docs page
and one line of torchship.backends.SITE_KINDS.

The proof, as far as a test can give one: a kind that exists only in tests/toy_kind.py is
registered with one line (monkeypatched) and goes through everything generic — sites.toml with
its own keys and errors, placement, `torchship run --site auto`, status, logs and cancel from
the store, `site add`, `site check` and `plan -o` — with no other file knowing it. And the
generic modules are checked to name no kind at all."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from torchship import backends
from torchship.backends import SITE_KINDS, kind_of_handle, site_kind
from torchship.backends.base import SiteKind
from torchship.cli import main
from torchship.doctor.facts import Facts
from torchship.errors import SpecError, UsageError
from torchship.jobs import cancel, get_job, logs, reconcile, submit
from torchship.place import place
from torchship.place.policy import demand_from_job
from torchship.sites import load_sites, sites_from_toml
from torchship.spec.job import load_job
from torchship.state import JobStore

SRC = REPO / "src/torchship"
SITES = """
[[site]]
name = "laptop"
kind = "local"

[[site]]
name = "toybox"
kind = "toy"
trust = "private"
gpus = [{{ model = "H100", count = 8 }}]
spool = "{spool}"
colour = "blue"
"""
JOB = '[job]\nname = "train"\ngpus_per_node = 4\ncommand = ["python", "train.py"]\n'


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The toy kind registered with its one line; TORCHSHIP_HOME and the sites file here."""
    monkeypatch.setitem(SITE_KINDS, "toy", "tests.toy_kind")
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path / "home"))
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "sites.toml").write_text(SITES.format(spool=spool))
    monkeypatch.setenv("TORCHSHIP_SITES", str(tmp_path / "sites.toml"))
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj/job.toml").write_text(JOB)
    return tmp_path


def test_every_registered_kind_is_one_module_that_declares_itself() -> None:
    schemes = []
    for name, path in SITE_KINDS.items():
        kind = site_kind(name)
        assert isinstance(kind, SiteKind) and kind.name == name
        assert path == f"torchship.backends.{name}"  # one module, named after its kind
        assert kind.capabilities.kind == name
        schemes.append(kind.handle_scheme)
    assert len(set(schemes)) == len(schemes)  # a handle's scheme names one kind


def test_the_sites_file_takes_the_kinds_own_keys_with_field_paths(toy: Path) -> None:
    laptop, box = load_sites(toy / "sites.toml")
    assert (box.kind, box.tier, box.options.to_dict()) == (
        "toy", 1, {"spool": str(toy / "spool"), "colour": "blue"})  # fmt: skip
    assert box.capabilities is not None and box.capabilities.remote and laptop.tier == 0
    text = (toy / "sites.toml").read_text()
    cases = [
        (text.replace('colour = "blue"', 'colour = "green"'), "site[1].colour", "not a toy colour"),
        (text.replace('colour = "blue"', 'colur = "blue"'), "site[1].colur", "did you mean"),
        (text.replace(f'spool = "{toy / "spool"}"', ""), "site[1].spool", "missing"),
        (text.replace('colour = "blue"', 'context = "c"'), "site[1].context",
         "applies to kubernetes sites, not toy"),
        (text.replace('kind = "local"', 'kind = "local"\nspool = "/x"'), "site[0].spool",
         "applies to toy sites, not local"),
        (text + text[text.index('[[site]]\nname = "toybox"'):].replace('"toybox"', '"t2"')
         .replace('"private"', '"public"'), "site", "share the spool"),  # what a kind reaches
    ]  # fmt: skip
    for bad, field, says in cases:
        with pytest.raises(SpecError) as e:
            sites_from_toml(bad, "sites.toml")
        assert e.value.field == field and says in f"{e.value.message} {e.value.hint}", bad
        assert e.value.hint


def test_placement_run_status_logs_cancel_through_the_generic_code(toy: Path) -> None:
    job_file = toy / "proj/job.toml"
    sites = load_sites(toy / "sites.toml")
    p = place(demand_from_job(load_job(job_file)), sites)
    assert p.site == "toybox" and p.decision == "run"  # the laptop has no GPUs
    with JobStore(toy / "home/jobs.db") as store:
        sub = submit(job_file, "auto", store=store, facts=Facts("probe"))
        job = sub.job
        assert job is not None and sub.request.text == f"toy run train {job.id}"
        assert job.site == "toybox" and job.handle and job.handle.startswith("toy://")
        assert kind_of_handle(job.handle) == "toy"
        assert reconcile(store, job).state == "pending"
        folder = toy / "spool" / job.id
        (folder / "log").write_text("step 1\nstep 2\n")
        (folder / "state.json").write_text('{"state": "running"}')
        assert reconcile(store, get_job(store, job.id)).state == "running"
        assert list(logs(get_job(store, job.id))) == ["step 1\n", "step 2\n"]
        # the site leaves the sites file: its job is still asked about, by its handle
        (toy / "sites.toml").write_text('[[site]]\nname = "laptop"\nkind = "local"\n')
        assert cancel(store, get_job(store, job.id)).state == "cancelled"
        assert json.loads((folder / "state.json").read_text()) == {"state": "cancelled"}


def test_site_add_check_and_plan_through_the_cli(toy: Path, capsys: pytest.CaptureFixture[str]
                                                 ) -> None:  # fmt: skip
    sites = str(toy / "more.toml")
    spool = f"spool={toy / 'spool'}"
    assert main(["site", "add", "t2", "--kind", "toy", "--trust", "public", "--set", spool,
                 "--set", "colour=blue", "--sites", sites]) == 0  # fmt: skip
    assert "t2: spool" in capsys.readouterr().out  # the kind's check ran before the write
    assert main(["site", "add", "t3", "--kind", "toy", "--trust", "public", "--sites", sites]) == 2
    assert "site[1].spool" in capsys.readouterr().err
    assert main(["site", "check", "--sites", str(toy / "sites.toml")]) == 0
    assert "toybox: spool" in capsys.readouterr().out
    out = toy / "plan"
    assert main(["plan", str(toy / "proj/job.toml"), "-o", str(out)]) == 0
    assert (out / "train.toy.txt").read_text().startswith("toy run train ")


def test_a_job_whose_site_and_kind_are_gone_says_so(toy: Path) -> None:
    with JobStore(toy / "home/jobs.db") as store:
        job, _ = store.submit("k", "train", {}, site="gone")
        job = store.transition(job.id, "pending", handle=f"nokind://x/{job.id}")
        with pytest.raises(UsageError, match="no kind of site writes handles like"):
            reconcile(store, job)


# --- the generic code names no kind --------------------------------------------------------

# Modules every kind goes through. A string equal to a kind's name in them is a kind named
# outside its module: the next kind would have to edit it. Not in the list: cli/container.py
# (`jupyter`, `shell`, `exec`: the project's image on this machine's engine, through the docker
# site's module; commands of the image, not of every kind) and k8s/ (the Kubernetes objects,
# which the kubernetes and skypilot modules build on).
GENERIC = ["jobs.py", "state.py", "sites.py", "place", "cli", "backends/__init__.py",
           "backends/base.py", "backends/preflight.py", "monitor"]  # fmt: skip
NOT_GENERIC = {"cli/container.py"}
ALLOWED = {
    # the name of the embedded default site (this machine), which is also the local kind's
    # implicit site: `torchship run` without --site, and the sites file when there is none
    ("cli/run.py", "local"),
    ("jobs.py", "local"),
    ("sites.py", "local"),
    # the image build engines (`image build --engine docker`), repeated for the parser: a build
    # tool of this machine, not the docker site kind
    ("cli/image.py", "docker"),
}


def _strings(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef) and n.body
        and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }  # fmt: skip
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    }


def test_generic_modules_name_no_kind() -> None:
    kinds = set(SITE_KINDS)
    files = [f for g in GENERIC for f in ([SRC / g] if g.endswith(".py") else
                                          sorted((SRC / g).rglob("*.py")))]  # fmt: skip
    named = set()
    for f in files:
        rel = f.relative_to(SRC).as_posix()
        if rel in NOT_GENERIC:
            continue
        for s in _strings(f) & kinds:
            if (rel, s) not in ALLOWED:
                named.add((rel, s))
    # backends/__init__.py names each kind once: its registry line (and only there)
    registry = [(r, s) for r, s in named if r == "backends/__init__.py"]
    assert len(registry) == len(kinds) and backends.__name__ == "torchship.backends"
    assert sorted(named - set(registry)) == []


def test_placement_reads_a_kinds_live_queue(toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A kind that can read its queue (`load`) gives placement the real wait: past the toy
    site's budget, `plan` bursts to the next tier."""
    spool = toy / "cloud"
    cloud = ('\n[[site]]\nname = "cloud"\nkind = "toy"\ntier = 2\ntrust = "public"\n'
             f'gpus = [{{ model = "H100", count = 8 }}]\nspool = "{spool}"\n')  # fmt: skip
    (toy / "cloud").mkdir()
    sites = toy / "sites.toml"
    sites.write_text(sites.read_text().replace('colour = "blue"', 'colour = "blue"\n'
                                               "wait_budget_minutes = 30") + cloud)  # fmt: skip
    job = str(toy / "proj/job.toml")
    assert main(["plan", job, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["placement"]["site"] == "toybox"
    (toy / "spool/queue.json").write_text('{"free_gpus": 0, "wait_minutes": 90}')
    assert main(["plan", job, "--json"]) == 0
    placement = json.loads(capsys.readouterr().out)["placement"]
    assert placement["site"] == "cloud", placement
