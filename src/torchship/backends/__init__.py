"""Site backends: one module per site kind behind the interface in base.py."""

from __future__ import annotations

from collections.abc import Callable

from torchship.backends.base import Backend, Capabilities, Request, SiteStatus
from torchship.errors import UsageError
from torchship.place.sites import Site

__all__ = [
    "REGISTRY",
    "Backend",
    "Capabilities",
    "Request",
    "SiteStatus",
    "backend_for_site",
    "create_backend",
]


def _local() -> Backend:
    from torchship.backends.local import create

    return create()


def _docker() -> Backend:
    from torchship.backends.docker import create

    return create()


def _kubernetes() -> Backend:
    from torchship.backends.kubernetes import create

    return create()


def _skypilot() -> Backend:
    from torchship.backends.skypilot import create

    return create()


REGISTRY: dict[str, Callable[[], Backend]] = {
    "local": _local,
    "docker": _docker,
    "kubernetes": _kubernetes,
    "skypilot": _skypilot,
}


def backend_for_site(site: Site, peers: tuple[Site, ...] = ()) -> Backend:
    """The backend that runs jobs on this site: remote kinds need the site's own settings
    (and a Kubernetes site the other sites of its file: none of another trust may share its
    cluster)."""
    if site.kind == "kubernetes":
        from torchship.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(site, peers=peers)
    if site.kind == "skypilot":
        from torchship.backends.skypilot import create as sky

        return sky(site)
    return create_backend(site.kind)


def create_backend(kind: str) -> Backend:
    try:
        factory = REGISTRY[kind]
    except KeyError:
        raise UsageError(
            f"unknown site {kind!r}", f"one of: {', '.join(sorted(REGISTRY))}"
        ) from None
    return factory()
