"""The site-backend interface: plan → Request (pure, exact text), apply → Handle (a URL),
then status, logs and cancel by handle; capabilities as data.

Every backend module has the same anatomy (options → plan helpers → the backend class →
`create`), and is added to torchship.backends.REGISTRY with one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from torchship.errors import UsageError
from torchship.lock.model import Lock
from torchship.spec.job import JobSpec

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


@dataclass(frozen=True, slots=True)
class SiteStatus:
    state: str  # one of SITE_STATES
    exit_code: int | None = None
    reason: str = ""


class Backend(Protocol):
    kind: str

    def capabilities(self) -> Capabilities: ...

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request: ...

    def apply(self, request: Request) -> str: ...

    def status(self, handle: str) -> SiteStatus: ...

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, handle: str) -> None: ...


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
