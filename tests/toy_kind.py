"""A kind of site that exists only in the tests (`kind = "toy"`): the whole of a kind in one
module, as torchship.backends.base describes it, registered with one line of
torchship.backends.SITE_KINDS (tests/unit/test_site_kinds.py adds it with monkeypatch).

A toy site "runs" a job by writing it into its spool folder; the test plays the site by
writing the job's state beside it. Synthetic: it stands for the next real kind (slurm)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchship.backends.base import (
    Request,
    SiteKind,
    SiteStatus,
    admit,
    data_classes,
    parse_handle,
)
from torchship.errors import UsageError, excerpt
from torchship.lock.model import Lock
from torchship.place.policy import SiteLoad
from torchship.place.sites import Capabilities, Site
from torchship.spec.job import JobSpec
from torchship.spec.load import FieldReader

NAME = "toy"
SCHEME = "toy"
CAPABILITIES = Capabilities(kind=NAME, multi_node=True, max_nodes=1, gpus=True, remote=True,
                            data_reach="path")  # fmt: skip
OPTION_KEYS = ("spool", "colour")


@dataclass(frozen=True, slots=True)
class ToyOptions:
    spool: str
    colour: str = "red"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reaches(self) -> tuple[tuple[str, str], ...]:
        return (("the spool", self.spool),)


def parse_options(r: FieldReader, trust: str) -> ToyOptions:
    spool = r.string("spool", None, 'spool = "/var/spool/toy"')
    if not spool:
        raise r.fail("spool", "missing: a toy site names its spool folder",
                     'add spool = "/var/spool/toy"')  # fmt: skip
    colour = r.string("colour", "red", 'colour = "red"') or "red"
    if colour not in ("red", "blue"):
        raise r.fail("colour", f"{excerpt(colour)} is not a toy colour", "one of: red, blue")
    return ToyOptions(spool, colour)


class ToyBackend:
    kind = NAME

    def __init__(self, site: Site | None) -> None:
        self.site = site

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request:
        if self.site is None:
            raise UsageError("a toy job needs its site", "run it with --site auto")
        return Request(site=self.site.name, kind=NAME, job_id=job_id,
                       text=f"toy run {job.name} {job_id}",
                       data_classes=data_classes(job))  # fmt: skip

    def apply(self, request: Request) -> str:
        if self.site is None:
            raise UsageError("a toy job needs its site", "run it with --site auto")
        admit(request, self.site)
        spool = Path(self.site.options.to_dict()["spool"])
        (spool / request.job_id).mkdir(parents=True)
        (spool / request.job_id / "request").write_text(request.text)
        return f"{SCHEME}://{spool.as_posix().strip('/').replace('/', '%2F')}/{request.job_id}"

    def _folder(self, handle: str) -> Path:
        spool, job_id = parse_handle(handle, SCHEME)
        return Path("/" + spool.replace("%2F", "/")) / job_id

    def status(self, handle: str) -> SiteStatus:
        state = self._folder(handle) / "state.json"
        if not state.exists():
            return SiteStatus("pending", reason="in the spool")
        data = json.loads(state.read_text())
        return SiteStatus(data["state"], data.get("exit_code"))

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        log = self._folder(handle) / "log"
        return iter(log.read_text().splitlines(keepends=True) if log.exists() else [])

    def cancel(self, handle: str) -> None:
        (self._folder(handle) / "state.json").write_text('{"state": "cancelled"}')


def create(site: Site | None = None, peers: tuple[Site, ...] = ()) -> ToyBackend:
    return ToyBackend(site)


def check(site: Site, live: bool) -> list[str]:
    spool = Path(site.options.to_dict()["spool"])
    if spool.is_dir():
        return [f"{site.name}: spool {spool} is there"]
    return [f"warning: {site.name}: no spool folder {spool}"]


def export(job: JobSpec, lock: Lock | None, site: Site, job_id: str, out: Path,
           image_digest: str | None) -> dict[str, str]:  # fmt: skip
    return {f"{job.name}.toy.txt": ToyBackend(site).plan(job, lock, job_id).text + "\n"}


def load(site: Site) -> SiteLoad | None:
    """The queue the test writes into the spool (`queue.json`: free GPUs, wait minutes)."""
    queue = Path(site.options.to_dict()["spool"]) / "queue.json"
    if not queue.exists():
        return None
    data = json.loads(queue.read_text())
    return SiteLoad(int(data["free_gpus"]), float(data["wait_minutes"]))


KIND = SiteKind(
    name=NAME,
    capabilities=CAPABILITIES,
    handle_scheme=SCHEME,
    create=create,
    option_keys=OPTION_KEYS,
    parse_options=parse_options,
    elsewhere={"spool": "remove it: only toy sites have a spool"},
    check=check,
    export=export,
    load=load,
)
