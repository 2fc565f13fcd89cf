"""`resolve --json`: its fast path against the general one, and warm caches against cold.

The requests are synthetic (seeded draws over the matrix's releases, GPUs and the oracle's
drivers, with the options a spec can set); the documents are the real ones the CLI prints.
"""

from __future__ import annotations

import random
from dataclasses import replace

from tests import oracle
from torchship.compat import Matrix, Request, lookup_gpu
from torchship.compat.explain import clear_caches, explain, fleet_json
from torchship.compat.fleet import resolve_fleet
from torchship.compat.platforms import LINUX_X86_64, PLATFORMS, possible
from torchship.spec.fields import parse_driver, parse_torch


def _requests(m: Matrix, n: int, seed: int) -> list[Request]:
    """`n` seeded requests for one platform: a release or a range, 0-3 GPUs that can be
    there, a driver and a Python most of the time, and now and then a CUDA pin, cuda-compat,
    a glibc, torchvision or an extension."""
    rng = random.Random(seed)
    gpus = [lookup_gpu(m, g.name) for g in m.gpus]
    torches = [r.torch for r in m.releases] + [">=2.7,<2.12", "2.9", ">=2.4"]
    out = []
    for _ in range(n):
        platform = rng.choice([*PLATFORMS, LINUX_X86_64])
        here = [g for g in gpus if platform in possible(g.gpu)]
        text = rng.choice(torches)
        driver = rng.choice(oracle.DRIVERS)
        req = Request(
            torch=parse_torch(text)[0],
            torch_text=text,
            gpus=tuple(rng.sample(here, rng.randint(0, 3))) if here else (),
            driver=parse_driver(driver) if driver else None,
            python=rng.choice([None, "3.10", "3.12", "3.13", "3.14"]),
            platform=platform,
            platforms=(platform,),
            cuda=rng.choice(["auto"] * 6 + ["cpu", "12.8", "12", "13.0"]),
            allow_forward_compat=rng.random() < 0.2,
            glibc=rng.choice([None] * 4 + [(2, 17), (2, 28)]),
        )
        if rng.random() < 0.1:
            req = replace(req, domain_libraries=("torchvision",))
        if rng.random() < 0.1:
            req = replace(req, extension_pins=(rng.choice([("xformers", ""), ("flash-attn", "")]),))
        out.append(req)
    return out


def test_fleet_json_is_the_fleet_resolutions_json(matrix: Matrix) -> None:
    """One platform takes a shortcut past the Resolution, with cached hints and the
    resolver's judge reused for what would fit: the same document as the general path."""
    clear_caches()
    for req in _requests(matrix, 1500, seed=20):
        fleet = resolve_fleet(req, matrix)
        want = fleet.to_json(tuple(s.text for s in explain(fleet.primary)))
        assert fleet_json(req, matrix) == want, req


def test_cached_answers_are_the_cold_ones(matrix: Matrix) -> None:
    reqs = _requests(matrix, 300, seed=21)
    warm = [fleet_json(r, matrix) for r in reqs]
    clear_caches()
    assert [fleet_json(r, matrix) for r in reqs] == warm
