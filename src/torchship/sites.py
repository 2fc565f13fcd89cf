"""The sites file, read with every kind's own options, and the sites commands look up.

torchship.place.sites parses what all sites share and hands each kind's keys to the kind's
module; the kinds are torchship.backends.SITE_KINDS, so reading a sites file sits here, above
the backends (placement below them never imports one). A sites file imports the modules of
the kinds it names, and no other.

A site is found by its name. With no sites file, the embedded default is this machine only
(`local`); and a kind that needs no settings of its own (local, docker) has an implicit site
named after it, so `torchship run --site docker` needs no sites file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torchship.backends import KINDS
from torchship.errors import SpecError, TorchshipError, UsageError
from torchship.place import sites as generic
from torchship.place.sites import Site, default_sites_path

if TYPE_CHECKING:  # placement's types: `run --site local` reads its site without the policy
    from torchship.place.policy import SiteLoad

__all__ = [
    "EMBEDDED",
    "default_sites_path",
    "implicit_site",
    "live_loads",
    "load_sites",
    "site_named",
    "sites_from_toml",
    "sites_or_default",
]

EMBEDDED = "the embedded default (this machine only)"


def sites_from_toml(text: str, file: str) -> tuple[Site, ...]:
    return generic.sites_from_toml(text, file, KINDS)


def load_sites(path: str | Path) -> tuple[Site, ...]:
    return generic.load_sites(path, KINDS)


def implicit_site(kind: str) -> Site | None:
    """The site of a kind that needs no settings, named after the kind; None for a kind that
    is not registered or needs settings (a Kubernetes site names its context)."""
    if kind not in KINDS:
        return None
    try:
        return generic.site_from_table({"name": kind, "kind": kind}, "(implicit)", "", KINDS)
    except SpecError:
        return None


def sites_or_default(path: str | Path | None) -> tuple[tuple[Site, ...], str]:
    """The sites of `path` (or the default file); with no file at the default path, the
    embedded default: this machine only."""
    if path is not None:
        return load_sites(path), str(path)
    default = default_sites_path()
    if default.exists():
        return load_sites(default), str(default)
    local = implicit_site("local")
    assert local is not None  # the local kind is registered and needs no settings
    return (local,), EMBEDDED


def site_named(name: str, path: str | Path | None = None) -> tuple[Site, tuple[Site, ...], str]:
    """(the site called `name`, every site of its file, where they came from): from the sites
    file, else the implicit site of the kind of that name."""
    sites, source = sites_or_default(path)
    found = next((s for s in sites if s.name == name), None)
    if found is not None:
        return found, sites, source
    implicit = implicit_site(name)
    if implicit is not None:
        return implicit, (implicit,), f"the implicit {name} site"
    if name in KINDS:
        raise UsageError(
            f"unknown site {name!r}: {source} has no site of that name, and a {name} site needs "
            "settings of its own",
            f"add one: `torchship site add NAME --kind {name} …`, then --site NAME",
        )
    import difflib  # only for a name that is not there

    names = [s.name for s in sites]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(names)}, or auto"
    raise UsageError(f"unknown site {name!r}: not in {source}", hint)


def live_loads(sites: tuple[Site, ...]) -> tuple[dict[str, SiteLoad], list[str]]:
    """Each site's load now, as its kind reads it (a Slurm partition's queue), for placement;
    and a note per site whose kind could not read it (that site is taken as free)."""
    loads: dict[str, SiteLoad] = {}
    notes: list[str] = []
    for site in sites:
        read = KINDS[site.kind].load
        if read is None:
            continue
        try:
            found = read(site)
        except TorchshipError as e:
            notes.append(f"{site.name}: its queue could not be read ({e.message}): taken as free")
            continue
        if found is not None:
            loads[site.name] = found
    return loads, notes
