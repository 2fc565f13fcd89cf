"""The site-backend interface: plan → Request (pure, exact text), apply → Handle (a URL),
then status, logs and cancel by handle; capabilities as data.

One kind of site is one module, torchship.backends.<kind>, listed with one line in
torchship.backends.SITE_KINDS. Every such module has the same anatomy:

    CAPABILITIES      what the kind can do (torchship.place.Capabilities)
    options           its own keys of a [[site]] table: a frozen dataclass and `parse_options`
                      (errors name `sites.toml:site[i].key`); none for a kind of this machine
    plan helpers      pure: (job, lock, job id, site) → the exact command or objects
    the backend       a class with capabilities/plan/apply/status/logs/cancel (`Backend`)
    create            create(site, peers) → the backend, heavy clients imported only here
    check, export     optional: `torchship site check` lines, `torchship plan -o` files
    KIND = SiteKind(…)  all of the above, as the registry finds it

The module's top level imports nothing heavy (no client library), so reading a sites file,
which loads the kinds it names, stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from torchship.errors import TorchshipError, UsageError
from torchship.place.sites import NO_OPTIONS, Capabilities, Site, SiteOptions

if TYPE_CHECKING:
    from pathlib import Path

    from torchship.lock.model import Lock
    from torchship.place.policy import SiteLoad
    from torchship.spec.job import JobSpec
    from torchship.spec.load import FieldReader

__all__ = [
    "SITE_STATES",
    "Backend",
    "Capabilities",
    "DataPolicyError",
    "Request",
    "SiteKind",
    "SiteStatus",
    "admit",
    "data_classes",
    "last_line",
    "no_check",
    "no_options",
    "one_by_one",
    "parse_handle",
]

SITE_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "lost")


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


# A backend may also answer for many of its site's jobs at once (the reconcile of `status`):
#
#     def statuses(self, handles: Sequence[str]) -> Mapping[str, SiteStatus | TorchshipError]
#
# in a fixed number of calls to the site, whatever the number of handles (one `docker ps`, one
# list per Kubernetes namespace, one squeue and one sacct, one `sky queue`). Every handle gets
# an entry: its status, or the error that one handle has (another host's handle); a job the
# site no longer knows is `lost`, as `status` says. A site that cannot be asked at all raises,
# once, for all of them. A backend without it is asked one handle at a time (`one_by_one`).
Statuses = Mapping[str, "SiteStatus | TorchshipError"]


def one_by_one(backend: Backend, handles: Sequence[str]) -> dict[str, SiteStatus | TorchshipError]:
    """`statuses` for a backend that has none: `status` per handle, a handle's own error kept
    as its entry (so one bad handle does not hide the others)."""
    out: dict[str, SiteStatus | TorchshipError] = {}
    for handle in dict.fromkeys(handles):
        try:
            out[handle] = backend.status(handle)
        except TorchshipError as e:
            out[handle] = e
    return out


def no_options(r: FieldReader, trust: str) -> SiteOptions:
    """The options of a kind with no keys of its own."""
    return NO_OPTIONS


def no_check(site: Site, live: bool) -> list[str]:
    """`torchship site check` for a kind with nothing to check beyond its table."""
    return []


# (job, lock, site, job id, output folder, image digest) → {file name: text}
Exporter = Callable[["JobSpec", "Lock | None", Site, str, "Path", "str | None"], dict[str, str]]


@dataclass(frozen=True, slots=True)
class SiteKind:
    """One kind of site, as its module declares it (`KIND = SiteKind(...)`)."""

    name: str  # its key in torchship.backends.SITE_KINDS and `kind = "…"` in sites.toml
    capabilities: Capabilities
    handle_scheme: str  # its handles are `<scheme>://…`: how a job's kind is found again
    create: Callable[[Site | None, tuple[Site, ...]], Backend]  # (site, the file's other sites)
    option_keys: tuple[str, ...] = ()  # its own keys of a [[site]] table
    parse_options: Callable[[FieldReader, str], SiteOptions] = no_options  # (table, trust)
    elsewhere: Mapping[str, str] = field(default_factory=dict)  # hints: its key on another kind
    check: Callable[[Site, bool], list[str]] = no_check  # (site, live) → lines; "warning: …"
    # what `plan -o DIR` writes into DIR; None: the plan's text as `<job>.<kind>.sh`
    export: Exporter | None = None
    # the site's load now (free GPUs, the wait a new job would have: a real queue), for
    # placement; None: the kind cannot tell, and placement takes the site as free
    load: Callable[[Site], SiteLoad | None] | None = None


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
