"""The packaged matrix: schema, a source on every fact, uncertain facts flagged."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from torchship.compat import Matrix
from torchship.compat.matrix import load_matrix, parse_matrix
from torchship.errors import MatrixError


def raw() -> dict:  # type: ignore[type-arg]
    text = resources.files("torchship.compat").joinpath("data/matrix.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def test_versioned_and_dated() -> None:
    data = raw()
    assert data["schema_version"] == 1 and data["generated_at"] >= "2026-11-22"
    assert data["platform"] == "linux_x86_64"


def test_every_fact_names_a_known_source() -> None:
    data = raw()
    sources = set(data["sources"])
    for r in data["releases"]:
        for v in r["variants"]:
            assert v["arch_sources"] and set(v["arch_sources"]) <= sources, (r["torch"], v["name"])
            if "unverified" in v["arch_sources"]:
                assert v["uncertain"], (r["torch"], v["name"])
            assert v["arch_confidence"] in {
                "high",
                "medium-high",
                "medium",
                "medium-low",
                "unknown",
                "n/a",
            }
    for g in data["gpus"]:
        assert set(g["sources"]) <= sources, g["name"]
    for f in data["driver_floors"]:
        assert f["source"] in sources
    for t in data["toolkits"]:
        assert t["source"] in sources


def test_unknown_arch_lists_are_flagged_uncertain() -> None:
    for r in raw()["releases"]:
        for v in r["variants"]:
            if v["arch"] is None:
                assert v["uncertain"], (r["torch"], v["name"])


def test_releases_cover_2_0_to_2_15(matrix: Matrix) -> None:
    versions = [r.torch for r in matrix.releases]
    assert versions[0] == "2.0.0" and versions[-1] == "2.15.0" and len(versions) == 28
    for r in matrix.releases:
        assert r.variant(r.pypi_default) is not None, r.torch
        assert r.variant("cpu") is not None
        assert r.python and all(p.startswith("3.") for p in r.python)


def test_driver_floors(matrix: Matrix) -> None:
    assert matrix.driver_floors == {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}
    assert matrix.driver_cuda((550, 54, 15)) == (12, 4, 1)
    assert matrix.driver_cuda((400,)) is None


def test_every_cuda_variant_has_a_base_image(matrix: Matrix) -> None:
    from torchship.compat.resolve import base_image

    for r in matrix.releases:
        for v in r.variants:
            img = base_image(matrix, v, None, "3.12")
            if v.cuda:
                assert img.startswith(f"nvidia/cuda:{v.cuda[0]}.{v.cuda[1]}."), (
                    r.torch,
                    v.name,
                    img,
                )
                assert img.endswith(("-base-ubuntu22.04", "-base-ubuntu24.04"))


def test_forward_compat_never_geforce(matrix: Matrix) -> None:
    for g in matrix.gpus:
        if g.segment == "consumer":
            assert not g.forward_compat, g.name


def test_bad_matrix_is_rejected() -> None:
    data = raw()
    with pytest.raises(MatrixError, match="schema_version"):
        parse_matrix({**data, "schema_version": 99})
    broken = {**data, "releases": [{"torch": "2.0.0"}]}
    with pytest.raises(MatrixError, match="variants"):
        parse_matrix(broken)


def test_the_loaded_matrix_makes_each_view_as_parsing_does() -> None:
    """load_matrix makes a release's views of other platforms when first used (issue 20):
    each is the one parse_matrix makes at once, and the same object every time."""
    eager, lazy = parse_matrix(raw()), load_matrix()
    assert len(eager.releases) == len(lazy.releases)
    for a, b in zip(eager.releases, lazy.releases, strict=True):
        assert a == b and a.platforms_known == b.platforms_known
        assert [n for n, _ in b.platforms] == [n for n, _ in a.platforms]
        for name, view in a.platforms:
            assert b.on(name) == view and b.on(name) is b.on(name), (a.torch, name)
            assert view.platforms == () and b.on(name) is dict(b.platforms)[name]
        assert b.on("linux-x86_64") is b and b.on("no-such-platform") is None


def test_a_bad_view_is_refused_when_parsed_or_first_used() -> None:
    data = raw()
    release = next(r for r in data["releases"] if "platforms" in r)
    name = next(iter(release["platforms"]))
    bad = {**release, "platforms": {**release["platforms"], name: {"python": ["3.12"]}}}
    broken = {**data, "releases": [bad if r is release else r for r in data["releases"]]}
    with pytest.raises(MatrixError, match=f"platforms.{name}: missing 'variants'"):
        parse_matrix(broken)
    lazy = parse_matrix(broken, lazy=True)
    rel = next(r for r in lazy.releases if r.torch == release["torch"])
    with pytest.raises(MatrixError, match=f"platforms.{name}: missing 'variants'"):
        rel.on(name)
