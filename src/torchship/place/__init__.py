"""Sites and placement: where a job may run, and where it should.

Placement is pure and names no kind of site; reading a sites file needs each kind's module
for its options, so that is torchship.sites (`load_sites`), above the backends. The names load
when first used: `torchship run --site local` reads its site without the placement policy."""

from typing import TYPE_CHECKING

from torchship._lazy import lazy_names

if TYPE_CHECKING:
    from torchship.place.policy import Demand, Placement, Rejection, SiteLoad, place
    from torchship.place.sites import Capabilities, Site

__all__ = ["Capabilities", "Demand", "Placement", "Rejection", "Site", "SiteLoad", "place"]

_POLICY = ("Demand", "Placement", "Rejection", "SiteLoad", "place")
__getattr__, __dir__ = lazy_names(
    globals(),
    {n: "torchship.place.policy" if n in _POLICY else "torchship.place.sites" for n in __all__},
)
