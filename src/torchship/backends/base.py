"""The site-backend interface: plan → Request (pure, exact text), apply → Handle (a URL),
then status, logs and cancel by handle; capabilities as data.

Every backend module has the same anatomy (options → plan helpers → the backend class →
`create`), and is added to torchship.backends.REGISTRY with one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from torchship.errors import TorchshipError, UsageError
from torchship.lock.model import Lock
from torchship.spec.job import JobSpec

if TYPE_CHECKING:
    from torchship.place.sites import Site

SITE_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "lost")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a site kind can do; placement filters on this data."""

    kind: str
    multi_node: bool
    max_nodes: int
    gpus: bool
    gpu_models: tuple[str, ...] = ()  # empty: whatever the site has (checked at preflight)
    containers: bool = False
    spot: bool = False
    gang_scheduling: bool = False
    volumes: tuple[str, ...] = ()  # how data reaches the job: "host-path", "bind", "pvc", "csi"
    restarts: bool = True  # restarts workers from the last checkpoint on failure
    remote: bool = False  # runs elsewhere: this machine's preflight says nothing about it


@dataclass(frozen=True, slots=True)
class Request:
    """Exactly what apply will do. `text` is the command line or the YAML, as it will run."""

    site: str
    kind: str
    job_id: str
    text: str
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # added to the inherited environment
    cwd: str | None = None
    run_dir: str | None = None
    max_runtime_s: float | None = None
    data_classes: tuple[str, ...] = ()  # the classes of data the job reads ("public": none)


@dataclass(frozen=True, slots=True)
class SiteStatus:
    state: str  # one of SITE_STATES
    exit_code: int | None = None
    reason: str = ""
    ended_at: float | None = None  # when a finished job ended, as the site recorded it


class Backend(Protocol):
    kind: str

    def capabilities(self) -> Capabilities: ...

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request: ...

    def apply(self, request: Request) -> str: ...

    def status(self, handle: str) -> SiteStatus: ...

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, handle: str) -> None: ...


class DataPolicyError(TorchshipError):
    """A request would carry data to a site that may not hold it."""


def data_classes(job: JobSpec) -> tuple[str, ...]:
    """The classes of data a job reads, for its request: ("public",) when it declares none."""
    return tuple(sorted({d.data_class for d in job.data})) or ("public",)


def admit(request: Request, site: Site) -> None:
    """The last check before a backend sends anything off this machine: the request was
    planned for this site, says what data it carries, and the site may hold all of it.
    Placement decided this already; this holds when a caller, a switched site or a bug did
    not go through placement."""
    if request.site != site.name:
        raise DataPolicyError(
            f"job {request.job_id} was planned for site {request.site!r}, not {site.name!r}: "
            "nothing was sent",
            "plan it again for the site it runs on",
        )
    if not request.data_classes:
        raise DataPolicyError(
            f"job {request.job_id}'s request does not say what data it reads: nothing was sent",
            "plan it with the site's backend (it records the job's data classes)",
        )
    barred = sorted(set(request.data_classes) - site.data_classes)
    if barred:
        raise DataPolicyError(
            f"{' and '.join(barred)} data may not go to {site.name} ({site.trust} site; allows "
            f"{', '.join(sorted(site.data_classes))}): job {request.job_id} was not sent",
            "run it where placement puts it: `torchship run JOB --site auto`",
        )


def parse_handle(handle: str, scheme: str) -> tuple[str, str]:
    """`scheme://<host>/<job-id>` → (host, job id)."""
    parts = urlsplit(handle)
    job_id = parts.path.strip("/")
    if parts.scheme != scheme or not parts.netloc or not job_id or "/" in job_id:
        raise UsageError(
            f"{handle!r} is not a {scheme} handle",
            f"handles look like {scheme}://<host>/<job-id>; see `torchship status`",
        )
    return parts.netloc, job_id


def last_line(text: str, default: str = "") -> str:
    """The last non-blank line of a command's output (where CLIs put the error)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else default
