"""The dated cloud price table (place/data/cloud_prices.toml): catalog prices with their date
and source, so a new cloud site starts from a figure that says where it came from."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from torchship.errors import UsageError


@dataclass(frozen=True, slots=True)
class CatalogPrice:
    provider: str
    instance: str
    gpu: str
    gpus: int
    region: str
    usd_per_hour: float
    as_of: str
    source: str
    verified: bool

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.instance}"

    @property
    def price_per_gpu_hour(self) -> float:
        return round(self.usd_per_hour / self.gpus, 4)


@cache
def catalog() -> tuple[CatalogPrice, ...]:
    text = resources.files("torchship.place").joinpath("data/cloud_prices.toml").read_text()
    return tuple(CatalogPrice(**row) for row in tomllib.loads(text)["price"])


def lookup(key: str) -> CatalogPrice:
    """`provider:instance`, e.g. `aws:p5.48xlarge` (case-insensitive)."""
    for p in catalog():
        if p.key.lower() == key.lower():
            return p
    known = ", ".join(p.key for p in catalog())
    raise UsageError(f"no catalog price for {key!r}", f"one of: {known}")
