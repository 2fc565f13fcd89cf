"""Job traces for `torchship simulate`: a CSV reader and a generator fitted to a published study.

A trace is a CSV with a header; one row a job:

    name,submit_s,gpus,duration_s,data_class,gpu_model,data_gb,data_site
    j0001,0,1,204,public,,20,onprem

`name`, `submit_s` (seconds from the trace's start), `gpus` and `duration_s` are required;
`data_class` defaults to public, `gpu_model` to any, `data_gb` to 0, `data_site` to none (the
data is everywhere, so no site pays egress). Jobs of more than 8 GPUs span nodes of 8.

The generators draw jobs whose distributions come from the Helios study (`generate_week`: a
week loading given GPUs as the study's cluster was loaded; `generate`: any number of days at
the study's job rate per GPU): Hu et al., "Characterization and Prediction of Deep Learning
Workloads in Large-Scale GPU Datacenters", SC '21, through its artifact's per-cluster summary
(github.com/S-Lab-System-Group/HeliosArtifact, analysis/1_compare with Philly trace/
helios_cluster_summary.csv, row Venus): 125,303 GPU jobs on 1,022 GPUs over 2020-04-01 to
2020-09-28 (181 days); GPU job run time mean 13,040.6 s, median 204 s; GPUs per job mean
6.736, median 1. How each figure is used is in `HELIOS_VENUS` and docs/placement.md.
"""

from __future__ import annotations

import csv
import difflib
import math
import random
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from torchship._files import read_user_text
from torchship.errors import SpecError, UnknownGPUError, excerpt
from torchship.place.sites import canonical_gpu
from torchship.spec.job import DATA_CLASSES
from torchship.spec.load import MAX_COUNT

COLUMNS = ("name", "submit_s", "gpus", "duration_s", "data_class", "gpu_model", "data_gb",
           "data_site")  # fmt: skip
REQUIRED = COLUMNS[:4]
GPUS_PER_NODE = 8

# Ceilings on a trace's numbers. Past them a value is a typo or an attack, never a job, and
# the sums made of them (start + run time; GPU-hours times price and GB times egress price,
# over every job) could overflow a float to inf, or print as a 300-digit cost.
# - times: 10 years (365.25-day years) in seconds. Published cluster traces span months (the
#   Helios study below: 181 days); a run or a submit time past a decade is no cluster's.
# - gpus: spec.load's MAX_COUNT (a million), the ceiling the sites file puts on a GPU pool:
#   more than any site can hold, so a larger job could only ever be refused.
# - data_gb: 100 PB (10**8 GB): past any one job's data set (the largest public training
#   corpora are some petabytes), and small enough that egress sums stay far inside a float.
TEN_YEARS_S = 10 * 365.25 * 86_400  # 315,576,000 s
BOUNDS: dict[str, tuple[float, float, str]] = {  # column: (least, most, the most in words)
    "submit_s": (0, TEN_YEARS_S, "10 years"),
    "gpus": (1, MAX_COUNT, "a million GPUs"),
    "duration_s": (1, TEN_YEARS_S, "10 years"),
    "data_gb": (0, 1e8, "100 PB"),
}


@dataclass(frozen=True, slots=True)
class TraceJob:
    name: str
    submit_s: float
    gpus: int
    duration_s: float
    data_class: str = "public"
    gpu_model: str = ""  # "" accepts any model
    data_gb: float = 0.0
    data_site: str | None = None

    @property
    def nodes(self) -> int:
        return max(1, math.ceil(self.gpus / GPUS_PER_NODE))

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes if self.gpus % self.nodes == 0 else GPUS_PER_NODE


def read_trace(path: str | Path, sites: Collection[str] | None = None) -> tuple[TraceJob, ...]:
    """The trace at `path`; with `sites` (the sites file's names), every data_site must be one."""
    text = read_user_text(path, "trace file", "give the path of a trace CSV")
    return parse_trace(text, str(path), sites)


def parse_trace(text: str, file: str, sites: Collection[str] | None = None) -> tuple[TraceJob, ...]:
    rows = csv.reader(text.splitlines())
    try:
        return _parse_rows(rows, file, sites)
    except csv.Error as e:  # a cell past the csv module's field limit (128 KB), a NUL
        raise SpecError(file, f"line {rows.line_num}", f"not a readable CSV row ({e})",
                        "one job per row, short cells") from None  # fmt: skip


def _parse_rows(
    rows: Iterator[list[str]], file: str, sites: Collection[str] | None
) -> tuple[TraceJob, ...]:
    header = next(rows, None)
    if not header:
        raise SpecError(file, "line 1", "empty trace", f"start with a header: {','.join(COLUMNS)}")
    header = [h.strip() for h in header]
    for col in REQUIRED:
        if col not in header:
            raise SpecError(file, "line 1", f"no {col!r} column", f"header: {','.join(COLUMNS)}")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], COLUMNS, n=1)
        raise SpecError(file, "line 1", f"unknown column {excerpt(unknown[0])}",
                        f"did you mean {close[0]!r}?" if close
                        else f"columns: {','.join(COLUMNS)}")  # fmt: skip
    jobs: list[TraceJob] = []
    names: set[str] = set()
    for n, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(header):
            raise SpecError(file, f"line {n}", f"{len(row)} fields, the header has {len(header)}",
                            "one value per column (leave optional ones empty)")  # fmt: skip
        job = _row(dict(zip(header, (v.strip() for v in row), strict=True)), file, n)
        if sites is not None and job.data_site is not None and job.data_site not in sites:
            raise _unknown_site(job.data_site, sites, file, n)
        if job.name in names:
            raise SpecError(file, f"line {n}.name", f"{excerpt(job.name)} appears twice",
                            "give each job its own name")  # fmt: skip
        names.add(job.name)
        jobs.append(job)
    if not jobs:
        raise SpecError(file, "line 2", "no jobs", "add one row per job under the header")
    return tuple(sorted(jobs, key=lambda j: j.submit_s))


def _unknown_site(name: str, sites: Collection[str], file: str, n: int) -> SpecError:
    close = difflib.get_close_matches(name, list(sites), n=1)
    if close:
        hint = f"did you mean {close[0]!r}?"
    else:
        shown = ", ".join(list(sites)[:8]) + (", …" if len(sites) > 8 else "")
        hint = f"name a site of the sites file ({shown}), or leave data_site empty"
    return SpecError(file, f"line {n}.data_site", f"unknown site {excerpt(name)}", hint)


def _row(v: dict[str, str], file: str, n: int) -> TraceJob:
    def num(col: str, default: float | None = None) -> float:
        lo, hi, most = BOUNDS[col]
        raw = v.get(col, "")
        hint = f"{col} = a number from {lo:g} to {hi:,.0f} ({most})"
        if raw == "" and default is not None:
            return default
        try:
            x = float(raw)
        except ValueError:
            raise SpecError(file, f"line {n}.{col}", f"{excerpt(raw)} is not a number",
                            hint) from None  # fmt: skip
        if not math.isfinite(x) or x < lo:
            raise SpecError(file, f"line {n}.{col}", f"{excerpt(raw)} is out of range", hint)
        if x > hi:
            raise SpecError(file, f"line {n}.{col}", f"{excerpt(raw)} is more than {most}", hint)
        return x

    if not v["name"]:
        raise SpecError(file, f"line {n}.name", "empty", "name each job")
    gpus = num("gpus")
    if gpus != int(gpus):
        raise SpecError(file, f"line {n}.gpus", f"{excerpt(v['gpus'])} is not a whole number",
                        "gpus = 1, 2, 4 …")  # fmt: skip
    data_class = v.get("data_class") or "public"
    if data_class not in DATA_CLASSES:
        raise SpecError(file, f"line {n}.data_class", f"unknown data class {excerpt(data_class)}",
                        f"use {', '.join(DATA_CLASSES)}")  # fmt: skip
    model = v.get("gpu_model", "")
    if model:
        try:
            model = canonical_gpu(model)
        except UnknownGPUError as e:
            raise SpecError(file, f"line {n}.gpu_model", e.message, e.hint) from None
    return TraceJob(
        name=v["name"],
        submit_s=num("submit_s"),
        gpus=int(gpus),
        duration_s=num("duration_s"),
        data_class=data_class,
        gpu_model=model,
        data_gb=num("data_gb", 0.0),
        data_site=v.get("data_site") or None,
    )


def write_trace(jobs: Iterable[TraceJob]) -> str:
    lines = [",".join(COLUMNS)]
    for j in jobs:
        lines.append(
            f"{j.name},{j.submit_s:.0f},{j.gpus},{j.duration_s:.0f},{j.data_class},"
            f"{j.gpu_model},{j.data_gb:g},{j.data_site or ''}"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TraceStudy:
    """The published figures a generated trace follows, with where each comes from."""

    source: str
    gpu_jobs: int
    gpus: int
    days: float
    duration_mean_s: float
    duration_median_s: float
    gpus_mean: float
    gpus_median: int
    gpu_seconds: float  # GPU time the GPU jobs used over the period


HELIOS_VENUS = TraceStudy(
    source=(
        "Hu et al., SC '21, Helios cluster Venus (HeliosArtifact "
        "analysis/1_compare with Philly trace/helios_cluster_summary.csv)"
    ),
    gpu_jobs=125_303,
    gpus=1_022,
    days=181,  # 2020-04-01 .. 2020-09-28, the artifact's date_range in analysis/trace_parser.py
    duration_mean_s=13_040.598,
    duration_median_s=204.0,
    gpus_mean=6.736,
    gpus_median=1,
    gpu_seconds=6_373_315_670 + 4_920_266_598 + 1_052_030_340,  # complete + cancel + fail
)

SIZES = (1, 2, 4, 8, 16, 32)  # a job spans at most 4 nodes of 8 (the example cluster's max)
MAX_DURATION_S = 6 * 24 * 3600.0  # a week-long trace cannot hold a longer job
# Not in the study (parameters): the share of jobs reading each data class
DATA_CLASS_SHARES = (("public", 0.4), ("internal", 0.3), ("sensitive", 0.3))


def size_distribution(study: TraceStudy = HELIOS_VENUS) -> tuple[float, ...]:
    """P(size) over SIZES: the maximum-entropy distribution with the study's median and mean.

    A median of 1 GPU says P(1) ≥ 0.5; with no further figure the least-committal choice is
    P(1) = 0.5 and, over the multi-GPU sizes, p(s) ∝ exp(-λ·s) with λ set so that the mean is the
    study's (maximum entropy under a mean constraint).
    """
    p1 = 0.5
    rest = SIZES[1:]
    target = (study.gpus_mean - p1 * 1) / (1 - p1)

    def mean(lam: float) -> float:
        w = [math.exp(-lam * s) for s in rest]
        return sum(s * x for s, x in zip(rest, w, strict=True)) / sum(w)

    lo, hi = -2.0, 2.0
    for _ in range(100):  # mean(λ) falls as λ grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) > target else (lo, mid)
    w = [math.exp(-lo * s) for s in rest]
    return (p1, *(x / sum(w) * (1 - p1) for x in w))


def duration_sigma(study: TraceStudy = HELIOS_VENUS) -> float:
    """Run times as a log-normal through the published median and mean: mean = median·e^(σ²/2)."""
    return math.sqrt(2 * math.log(study.duration_mean_s / study.duration_median_s))


def capped_mean_duration_s(
    study: TraceStudy = HELIOS_VENUS, cap_s: float = MAX_DURATION_S
) -> float:
    """E[min(X, cap)] for the log-normal run time X."""
    sigma = duration_sigma(study)
    mu = math.log(study.duration_median_s)
    z = NormalDist()
    below = math.exp(mu + sigma**2 / 2) * z.cdf((math.log(cap_s) - mu - sigma**2) / sigma)
    return below + cap_s * (1 - z.cdf((math.log(cap_s) - mu) / sigma))


def study_utilisation(study: TraceStudy = HELIOS_VENUS) -> float:
    """The share of the cluster's GPU time its GPU jobs used: completed + cancelled + failed GPU
    time (the summary's *_gpu_time columns) over GPUs × days."""
    return study.gpu_seconds / (study.gpus * study.days * 86_400)


def generate_week(
    private_gpus: int,
    seed: int = 2021,
    days: float = 7.0,
    data_classes: Sequence[tuple[str, float]] = DATA_CLASS_SHARES,
    data_gb: float = 20.0,
    data_site: str | None = "onprem",
    study: TraceStudy = HELIOS_VENUS,
) -> tuple[TraceJob, ...]:
    """A seeded trace that loads `private_gpus` GPUs as much as the study's cluster was loaded.

    Arrivals: a Poisson process; its rate offers the study's utilisation of `private_gpus`
    (GPU-seconds per job = mean size × mean capped run time, taken as independent: the study
    publishes no joint figure). Given n arrivals in the window, a Poisson process's arrival
    times are n sorted uniform draws, which is how they are drawn. Sizes, run times and data
    classes are stratified (each job takes its own quantile, then shuffled), so that a week of
    ~200 jobs follows the published distributions rather than one lucky or unlucky draw of a
    heavy tail. Data classes, data size and data site are not in the study: parameters.
    """
    rng = random.Random(seed)
    probs = size_distribution(study)
    gpu_seconds_per_job = sum(s * p for s, p in zip(SIZES, probs, strict=True)) * (
        capped_mean_duration_s(study)
    )
    rate_per_s = study_utilisation(study) * private_gpus / gpu_seconds_per_job
    n = _poisson(rng, rate_per_s * days * 86_400)
    return _draw_jobs(rng, n, days, MAX_DURATION_S, data_classes, data_gb, data_site, study)


def jobs_per_gpu_day(study: TraceStudy = HELIOS_VENUS) -> float:
    """The study's job rate per GPU: Venus, 125,303 GPU jobs / 181 days / 1,022 GPUs = 0.6774
    jobs per GPU a day; for 10,000 GPUs about 6,774 a day, ~203,000 in 30 days."""
    return study.gpu_jobs / study.days / study.gpus


def max_duration_s(days: float) -> float:
    """The longest run time a trace of `days` days holds: a day less than the trace (the
    week's 6 days, MAX_DURATION_S), at least one day."""
    return max(days - 1, 1.0) * 86_400


def generate(
    days: float,
    gpus: int,
    seed: int = 2021,
    data_classes: Sequence[tuple[str, float]] = DATA_CLASS_SHARES,
    data_gb: float = 20.0,
    data_site: str | None = "onprem",
    study: TraceStudy = HELIOS_VENUS,
) -> tuple[TraceJob, ...]:
    """A seeded trace of `days` days for a cluster of `gpus` GPUs at the study's job rate.

    Where `generate_week` sets the rate from the study's GPU time (a load), this sets it from
    the study's job count: `jobs_per_gpu_day` × `gpus` × `days` arrivals on average (a month of
    10,000 GPUs: ~203,000 jobs). Sizes, run times (capped at `max_duration_s(days)`) and data
    classes are drawn as `generate_week` draws them. Taken as independent, sizes and run times
    then offer 52% of the GPUs over a month, under the 77.2% the study measured: its GPU time
    sits in long, large jobs, a joint figure it does not publish.
    """
    rng = random.Random(seed)
    n = _poisson(rng, jobs_per_gpu_day(study) * gpus * days)
    cap = max_duration_s(days)
    return _draw_jobs(rng, n, days, cap, data_classes, data_gb, data_site, study)


def _draw_jobs(
    rng: random.Random,
    n: int,
    days: float,
    cap_s: float,
    data_classes: Sequence[tuple[str, float]],
    data_gb: float,
    data_site: str | None,
    study: TraceStudy,
) -> tuple[TraceJob, ...]:
    """n jobs: uniform arrival times in the window (sorted), stratified sizes, data classes and
    log-normal run times floored at a minute and capped at `cap_s`."""
    submits = sorted(rng.uniform(0, days * 86_400) for _ in range(n))
    sizes = _stratified_choice(rng, SIZES, size_distribution(study), n)
    classes = _stratified_choice(rng, [c for c, _ in data_classes], [w for _, w in data_classes], n)
    sigma = duration_sigma(study)
    mu = math.log(study.duration_median_s)
    quantiles = [(i + rng.random()) / n for i in range(n)]
    rng.shuffle(quantiles)
    z = NormalDist()
    return tuple(
        TraceJob(
            name=f"j{i + 1:04d}",
            submit_s=round(submits[i]),
            gpus=sizes[i],
            duration_s=round(max(60.0, min(cap_s, math.exp(mu + sigma * z.inv_cdf(quantiles[i]))))),
            data_class=classes[i],
            data_gb=data_gb,
            data_site=data_site,
        )
        for i in range(n)
    )


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw by counting unit-rate exponential gaps (linear in the mean: ~200,000 for a
    month of 10,000 GPUs, a tenth of a second)."""
    n, t = 0, rng.expovariate(1.0)
    while t < mean:
        n += 1
        t += rng.expovariate(1.0)
    return n


def _stratified_choice(
    rng: random.Random, values: Sequence[Any], weights: Sequence[float], n: int
) -> list[Any]:
    """n values in the weights' proportions (largest remainder), in random order."""
    total = sum(weights)
    exact = [w / total * n for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(values)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    out = [v for v, c in zip(values, counts, strict=True) for _ in range(c)]
    rng.shuffle(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """python -m torchship.place.trace --private-gpus 36 [--seed 2021] [--days 7] [-o FILE]"""
    import argparse
    import sys

    from torchship._atomic import write_text_atomic

    p = argparse.ArgumentParser(prog="python -m torchship.place.trace", description=__doc__)
    p.add_argument("--private-gpus", type=int, required=True, help="GPUs the trace should load")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--data-site", default="onprem", help="the site holding the jobs' data")
    p.add_argument("-o", "--output", help="write the CSV here (default: standard output)")
    a = p.parse_args(argv)
    text = write_trace(generate_week(a.private_gpus, a.seed, a.days, data_site=a.data_site))
    if a.output:
        write_text_atomic(Path(a.output), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
