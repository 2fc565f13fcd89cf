"""Sites and placement: where a job may run, and where it should."""

from torchship.place.policy import Demand, Placement, Rejection, SiteLoad, place
from torchship.place.sites import Site, load_sites

__all__ = ["Demand", "Placement", "Rejection", "Site", "SiteLoad", "load_sites", "place"]
