"""Sites and placement: where a job may run, and where it should.

Placement is pure and names no kind of site; reading a sites file needs each kind's module
for its options, so that is torchship.sites (`load_sites`), above the backends."""

from torchship.place.policy import Demand, Placement, Rejection, SiteLoad, place
from torchship.place.sites import Capabilities, Site

__all__ = ["Capabilities", "Demand", "Placement", "Rejection", "Site", "SiteLoad", "place"]
