"""Site backends: one module per kind of site, found through SITE_KINDS.

A kind is added with its module (torchship/backends/<kind>.py, whose anatomy base.py
describes, ending in `KIND = SiteKind(...)`), its tests, its docs page and one line below.
Nothing else names a kind: the sites parser takes each kind's keys and capabilities from its
module, jobs find a site's backend by the site's kind and a job's by its handle's scheme.
Modules are imported when a kind is first used, never at import of this package.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from torchship.errors import UsageError

if TYPE_CHECKING:
    from torchship.backends.base import Backend, SiteKind
    from torchship.place.sites import Site

__all__ = [
    "KINDS",
    "SITE_KINDS",
    "backend_for_site",
    "create_backend",
    "kind_of_handle",
    "site_kind",
]

# kind → its module. One line per kind.
SITE_KINDS: dict[str, str] = {
    "local": "torchship.backends.local",
    "docker": "torchship.backends.docker",
    "kubernetes": "torchship.backends.kubernetes",
    "skypilot": "torchship.backends.skypilot",
    "slurm": "torchship.backends.slurm",
}


def site_kind(kind: str) -> SiteKind:
    """The kind's declaration (its module's KIND), its module imported on first use."""
    try:
        path = SITE_KINDS[kind]
    except KeyError:
        raise UsageError(
            f"unknown site kind {kind!r}", f"one of: {', '.join(SITE_KINDS)}"
        ) from None
    declared: SiteKind = import_module(path).KIND
    if declared.name != kind:  # a registry line pointing at another kind's module
        raise UsageError(f"{path} declares kind {declared.name!r}, not {kind!r}",
                         "fix its line in torchship.backends.SITE_KINDS")  # fmt: skip
    return declared


class _Kinds(Mapping[str, "SiteKind"]):
    """SITE_KINDS as a mapping of kind → SiteKind that imports a module only when asked for
    it (the sites parser asks for the kinds a file names)."""

    def __getitem__(self, kind: str) -> SiteKind:
        if kind not in SITE_KINDS:
            raise KeyError(kind)
        return site_kind(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(SITE_KINDS)

    def __len__(self) -> int:
        return len(SITE_KINDS)


KINDS: Mapping[str, SiteKind] = _Kinds()


def create_backend(kind: str, site: Site | None = None, peers: tuple[Site, ...] = ()) -> Backend:
    """The kind's backend, for `site` (None: one that works from handles alone)."""
    return site_kind(kind).create(site, peers)


def backend_for_site(site: Site, peers: tuple[Site, ...] = ()) -> Backend:
    """The backend that runs jobs on this site (`peers`: the other sites of its file, which a
    kind may check against: none of another trust may share its cluster)."""
    return create_backend(site.kind, site, peers)


def kind_of_handle(handle: str) -> str | None:
    """The kind whose backend writes handles of this one's scheme, or None."""
    scheme = urlsplit(handle).scheme
    if not scheme:
        return None
    for kind in SITE_KINDS:
        if site_kind(kind).handle_scheme == scheme:
            return kind
    return None
