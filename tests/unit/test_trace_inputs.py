"""A trace's numbers are bounded and its data sites named in the sites file.

Before: `torchship simulate --json` printed `"makespan_h": Infinity` (not JSON) for a trace with
submit_s and duration_s of 1.7e308, a 300-digit cost for duration_s = 1e300, and simulated a
job whose data_site named no site. The traces below are synthetic (one row each, made to hit a
bound); the real ones are the bundled week (examples/hybrid/trace-week.csv) and its sites files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from torchship.errors import SpecError, UsageError
from torchship.place.simulate import PolicyResult, check_finite, simulate
from torchship.place.trace import (
    BOUNDS,
    COLUMNS,
    TEN_YEARS_S,
    generate_week,
    parse_trace,
    read_trace,
    write_trace,
)
from torchship.sites import load_sites

HYBRID = REPO / "examples/hybrid"
SITES = str(HYBRID / "sites.toml")
HEADER = ",".join(COLUMNS)


def trace(tmp_path: Path, row: str) -> str:
    path = tmp_path / "t.csv"
    path.write_text(f"{HEADER}\n{row}\n")
    return str(path)


def no_nan(text: str) -> object:
    """json.loads, failing on the Infinity / NaN that Python's json writes by default."""

    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} in the JSON output")

    return json.loads(text, parse_constant=refuse)


# --- through the CLI, as a user runs it ------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "first_line"),
    [
        (
            "j1,1.7e308,1,1.7e308,public,,1,onprem",
            "line 2.submit_s: '1.7e308' is more than 10 years",
        ),
        ("j1,0,1,1e300,public,,1,onprem", "line 2.duration_s: '1e300' is more than 10 years"),
        ("j1,0,1,100,public,,1e12,onprem", "line 2.data_gb: '1e12' is more than 100 PB"),
        ("j1,0,1e9,100,public,,1,onprem", "line 2.gpus: '1e9' is more than a million GPUs"),
        ("j1,0,1,inf,public,,1,onprem", "line 2.duration_s: 'inf' is out of range"),
    ],
)
def test_a_number_past_its_bound_is_one_clear_error(
    tmp_path: Path, row: str, first_line: str
) -> None:
    path = trace(tmp_path, row)
    r = run_cli("simulate", path, "--sites", SITES, "--json")
    assert r.returncode == 2, r.stdout
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == f"error: {path}:{first_line}"
    assert lines[1].startswith("hint: ") and len(lines) == 2


def test_an_unknown_data_site_is_named_with_a_close_match(tmp_path: Path) -> None:
    path = trace(tmp_path, "j1,0,1,100,public,,1,opnrem")
    r = run_cli("simulate", path, "--sites", SITES)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"error: {path}:line 2.data_site: unknown site 'opnrem'",
        "hint: did you mean 'onprem'?",
    ]


def test_an_unknown_data_site_with_no_close_match_lists_the_sites(tmp_path: Path) -> None:
    path = trace(tmp_path, "j1,0,1,100,public,,1,nowhere")
    r = run_cli("simulate", path, "--sites", SITES, "--json")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    error, hint = r.stderr.splitlines()
    assert error == f"error: {path}:line 2.data_site: unknown site 'nowhere'"
    assert hint.startswith("hint: ") and "workstation, onprem, aws-p5, gcp-a2" in hint


def test_the_bundled_week_still_simulates_to_valid_json() -> None:
    r = run_cli("simulate", str(HYBRID / "trace-week.csv"), "--sites", SITES, "--json")
    assert r.returncode == 0, r.stderr
    out = no_nan(r.stdout)
    assert isinstance(out, dict) and [x["ran"] for x in out["results"]] == [323] * 4


def test_a_generated_trace_names_a_site_of_the_grown_sites() -> None:
    r = run_cli("simulate", "--generate", "2", "--sites", SITES, "--policy", "hybrid", "--json")
    assert r.returncode == 0, r.stderr
    no_nan(r.stdout)


# --- the parser ------------------------------------------------------------------------------


def row_with(col: str, value: str) -> str:
    cells = {"name": "j1", "submit_s": "0", "gpus": "1", "duration_s": "60",
             "data_class": "public", "gpu_model": "", "data_gb": "1", "data_site": ""}  # fmt: skip
    cells[col] = value
    return f"{HEADER}\n{','.join(cells[c] for c in COLUMNS)}\n"


@pytest.mark.parametrize("col", list(BOUNDS))
def test_each_bounded_column_takes_its_ceiling_and_refuses_past_it(col: str) -> None:
    lo, hi, most = BOUNDS[col]
    (job,) = parse_trace(row_with(col, f"{hi:.0f}"), "t.csv")
    assert getattr(job, col) == hi
    (job,) = parse_trace(row_with(col, f"{lo:g}"), "t.csv")
    assert getattr(job, col) == lo
    past = f"{hi * 1.01:.0f}"
    with pytest.raises(SpecError) as e:
        parse_trace(row_with(col, past), "t.csv")
    assert e.value.message == f"t.csv:line 2.{col}: '{past}' is more than {most}"
    assert e.value.hint == f"{col} = a number from {lo:g} to {hi:,.0f} ({most})"


@pytest.mark.parametrize("col", list(BOUNDS))
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e309"])
def test_non_finite_or_negative_numbers_are_refused(col: str, value: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_trace(row_with(col, value), "t.csv")
    assert e.value.field == f"line 2.{col}"


def test_the_bounds_are_the_stated_ones() -> None:
    assert TEN_YEARS_S == 315_576_000
    assert BOUNDS["submit_s"][1] == BOUNDS["duration_s"][1] == TEN_YEARS_S
    assert BOUNDS["gpus"][1] == 1_000_000 and BOUNDS["data_gb"][1] == 1e8


def test_data_site_is_checked_only_against_given_sites() -> None:
    text = row_with("data_site", "nowhere")
    assert parse_trace(text, "t.csv")[0].data_site == "nowhere"  # no sites file: no check
    with pytest.raises(SpecError) as e:
        parse_trace(text, "t.csv", ["onprem", "aws-p5"])
    assert e.value.field == "line 2.data_site"
    assert parse_trace(row_with("data_site", ""), "t.csv", ["onprem"])[0].data_site is None
    assert parse_trace(row_with("data_site", "onprem"), "t.csv", ["onprem"])[0].data_site == (
        "onprem"
    )


def test_the_line_named_is_the_row_in_the_file_not_the_sorted_order() -> None:
    text = f"{HEADER}\nlate,500,1,60,public,,1,onprem\nearly,0,1,60,public,,1,nowhere\n"
    with pytest.raises(SpecError) as e:
        parse_trace(text, "t.csv", ["onprem"])
    assert e.value.field == "line 3.data_site"


def test_the_bundled_week_loads_against_its_sites_file() -> None:
    names = [s.name for s in load_sites(HYBRID / "sites.toml")]
    week = read_trace(HYBRID / "trace-week.csv", names)
    assert len(week) == 323 and {j.data_site for j in week} == {"onprem"}
    assert week == read_trace(HYBRID / "trace-week.csv")


def test_generated_traces_stay_inside_the_bounds() -> None:
    jobs = generate_week(36, seed=3)
    assert parse_trace(write_trace(jobs), "gen.csv", ["onprem"]) == jobs


# --- the second wall: no inf or nan reaches the output ----------------------------------------


def test_a_result_that_overflowed_is_refused_not_printed() -> None:
    good = simulate(parse_trace(row_with("data_site", ""), "t.csv"), load_sites(SITES), "hybrid")
    assert check_finite(good) is good
    bad = PolicyResult("hybrid", 1, 1, 0, 1.0, math.inf, 0.0, 0.0, 0, 0, ())
    with pytest.raises(UsageError) as e:
        check_finite(bad)
    assert e.value.message.startswith("policy hybrid: makespan_h came out as inf")
    assert e.value.hint
