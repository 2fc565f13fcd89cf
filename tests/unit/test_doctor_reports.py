"""The doctor on what people paste: the corpus of real public reports (its format, its figures,
the signatures' own report lists), partial input, evidence, bounded scanning, fuzzing with
mutations of the real reports.

Texts written here for a unit test are labelled SYNTHETIC; the corpus (tests/data/reports/)
holds only reporters' own words with their source URLs.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.corpus import NONE, evaluate, load_corpus
from torchship.compat.matrix import Matrix, load_matrix
from torchship.doctor import diagnose_report
from torchship.doctor.checks import CHECKS
from torchship.doctor.reader import read
from torchship.doctor.signatures import (
    SignatureError,
    Text,
    applies,
    load_signatures,
    parse_signatures,
    scan,
)

CORPUS = load_corpus()
CODES = {code for c in CHECKS for code in c.codes} | {s.code for s in load_signatures()}
# lock-mismatch compares with a torchship lock, which no public report has
NO_PUBLIC_REPORTS = {"lock-mismatch", "lock-environment"}


def findings(text: str, matrix: Matrix) -> dict[str, str]:
    return {f.code: f.severity for f in diagnose_report(text, matrix).findings}


# --- the corpus -------------------------------------------------------------------------------


def test_corpus_is_real_and_covers_every_code() -> None:
    assert len(CORPUS) >= 100
    assert sum(r.cause == NONE for r in CORPUS) >= 15
    sources = [r.source for r in CORPUS]
    assert len(set(sources)) == len(sources), "one report per thread"
    for r in CORPUS:
        assert r.source.startswith("https://"), r.path.name
        assert r.cause in CODES | {NONE}, r.path.name
        assert r.path.name.startswith(r.cause + "-"), r.path.name
        assert r.excerpt in ("partial", "whole"), r.path.name
        assert len(r.body.strip().splitlines()) >= 1, r.path.name
    for code in CODES - NO_PUBLIC_REPORTS:
        assert sum(r.cause == code for r in CORPUS) >= 3, code


def test_corpus_figures_meet_the_targets() -> None:
    res = evaluate()
    assert res["named_share"] >= 0.95, res["misses"]
    assert res["false_errors_per_report"] <= 0.02, res["false_errors"]
    assert res["seconds_per_report_max"] < 0.2


def test_each_signature_fires_on_the_reports_it_lists(matrix: Matrix) -> None:
    by_source = {r.source: r for r in CORPUS}
    for sig in load_signatures():
        for url in sig.reports:
            assert url in by_source, (sig.id, url)
            r = by_source[url]
            facts, _ = read(r.body, matrix)
            hits = [h for h in scan(Text(r.body), (sig,)) if applies(h, facts)]
            assert hits, (sig.id, r.path.name)
            assert sig.code == r.cause, (sig.id, r.path.name)


# --- the signatures file ----------------------------------------------------------------------


def test_the_shipped_signatures_all_compile() -> None:
    import tomllib
    from importlib import resources

    text = resources.files("torchship.doctor").joinpath("data/signatures.toml").read_text()
    assert len(parse_signatures(tomllib.loads(text), check_patterns=True)) >= 27


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": "s",
        "code": "c",
        "layer": "driver",
        "severity": "error",
        "anchors": ["a"],
        "pattern": "a",
        "message": "m",
        "fix": "f",
    }
    return {**entry, **changes}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"message": ""}, "required"),
        ({"unknown": 1}, "unknown field"),
        ({"anchors": ["UPPER"]}, "lower-case"),
        ({"pattern": "("}, "does not compile"),
        ({"when": ["no-such-predicate"]}, "unknown predicate"),
        ({"severity": "fatal"}, "severity or layer"),
    ],
)
def test_malformed_signatures_are_refused(entry: dict[str, object], match: str) -> None:
    with pytest.raises(SignatureError, match=match):
        parse_signatures({"signature": [_entry(**entry)]})


def test_a_duplicate_id_is_refused() -> None:
    with pytest.raises(SignatureError, match="used twice"):
        parse_signatures({"signature": [_entry(), _entry()]})


# --- evidence first ---------------------------------------------------------------------------

SYNTHETIC_UNLABELLED = (
    "PyTorch version: 2.1.0\nGPU models and configuration: GPU 0: NVIDIA GeForce RTX 3090\n"
)


def test_an_unlabelled_version_is_never_called_a_cpu_build(matrix: Matrix) -> None:
    """'PyTorch version: 2.1.0' says nothing of the build: no cpu-only-build at all."""
    assert "cpu-only-build" not in findings(SYNTHETIC_UNLABELLED, matrix)
    facts, _ = read(SYNTHETIC_UNLABELLED, matrix)
    assert facts.build is None


@pytest.mark.parametrize(
    ("extra", "build", "cuda"),
    [
        ("OS: Ubuntu 22.04.3 LTS (x86_64)\n", "cuda", "12.1"),  # PyPI's default for 2.1.0
        # PyPI's aarch64 wheels up to 2.10 are CPU builds (measured into the matrix)
        ("OS: Ubuntu 22.04.3 LTS (aarch64)\n", "cpu", None),
        ("OS: Microsoft Windows 11 Pro\n", "cpu", None),  # Windows PyPI wheels: CPU builds
        ("OS: macOS 14.4 (arm64)\n", "cpu", None),
        ("", None, None),  # no platform: not known
    ],
)
def test_what_an_unlabelled_version_means(
    extra: str, build: str | None, cuda: str | None, matrix: Matrix
) -> None:
    facts, _ = read(SYNTHETIC_UNLABELLED + extra, matrix)
    assert (facts.build, facts.torch_cuda) == (build, cuda)
    if build:
        assert facts.sources.get("torch_cuda", facts.sources.get("torch_build", "")).startswith(
            "inferred"
        )


def test_an_inferred_build_never_makes_an_error_alone(matrix: Matrix) -> None:
    """SYNTHETIC: a Linux report with an unlabelled old torch and an old driver: the driver floor
    of the inferred build is a warning with medium confidence, not an error."""
    text = (
        "PyTorch version: 2.1.0\nOS: Ubuntu 20.04.6 LTS (x86_64)\n"
        "Nvidia driver version: 470.82.01\nGPU models and configuration: GPU 0: Tesla T4\n"
    )
    d = diagnose_report(text, matrix)
    f = next(x for x in d.findings if x.code == "driver-too-old")
    assert f.severity == "warning" and f.confidence == "medium"
    assert any("470.82.01" in e and "line 3" in e for e in f.evidence)
    # ... and the failure line makes it an error, citing the line
    d = diagnose_report(
        text + "RuntimeError: The NVIDIA driver on your system is too old (found version 11040)",
        matrix,
    )
    f = next(x for x in d.findings if x.code == "driver-too-old")
    assert f.severity == "error" and any(e.startswith("line 5:") for e in f.evidence)


def test_a_cut_short_report_beside_its_traceback(matrix: Matrix) -> None:
    """The case the issue names: collect_env cut short, the traceback says everything."""
    text = (  # SYNTHETIC
        "PyTorch version: 2.6.0+cu124\nIs debug build: False\n"
        "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory\n"
    )
    d = diagnose_report(text, matrix)
    assert findings(text, matrix)["cuda-library-missing"] == "error"
    assert "the NVIDIA driver version" in d.unseen and d.errors == 1


def test_torch_names_the_missing_arch_in_its_own_words(matrix: Matrix) -> None:
    text = (  # SYNTHETIC, in torch's wording
        "UserWarning: NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible "
        "with the current PyTorch installation.\nThe current PyTorch install supports CUDA "
        "capabilities sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90.\n"
    )
    f = next(x for x in diagnose_report(text, matrix).findings)
    assert (f.code, f.severity) == ("gpu-arch-unsupported", "error")
    assert "sm_120" in f.message and "sm_120" in f.fix


def test_conflicting_evidence_is_said(matrix: Matrix) -> None:
    text = (  # SYNTHETIC: a CUDA build in the report, a CPU build in the traceback
        "PyTorch version: 2.5.1+cu124\nIs CUDA available: True\n"
        "AssertionError: Torch not compiled with CUDA enabled\n"
    )
    d = diagnose_report(text, matrix)
    assert any("another environment" in c for c in d.conflicts), d.conflicts


def test_nothing_found_names_the_command_that_decides(matrix: Matrix) -> None:
    d = diagnose_report("Traceback (most recent call last):\nValueError: bad shape\n", matrix)
    assert d.errors == 0 and d.next_step == "python -m torch.utils.collect_env"


def test_source_listing_lines_are_not_the_error(matrix: Matrix) -> None:
    """IPython shows the source around the failing line; a message in that source is not the
    error that happened (a real report showed 'Cannot re-initialize CUDA' this way)."""
    text = (  # SYNTHETIC, in IPython's layout
        '    289         "Cannot re-initialize CUDA in forked subprocess. To use CUDA with "\n'
        '--> 293     raise AssertionError("Torch not compiled with CUDA enabled")\n'
        "AssertionError: Torch not compiled with CUDA enabled\n"
    )
    assert findings(text, matrix) == {"cpu-only-build": "error"}


# --- bounded ----------------------------------------------------------------------------------


def test_long_lines_scan_in_linear_time(matrix: Matrix) -> None:
    """An 88 KB tqdm line (\\r-separated) took 12.5 s before; every anchor repeated across a
    1 MB line is the worst case for windowed patterns."""
    bar = "".join(f"\r{i:3d}%|{'█' * (i // 4)}{' ' * (25 - i // 4)}| {i}/100" for i in range(100))
    progress = (bar * (88_000 // len(bar) + 1))[:88_000]
    anchors = " ".join(a for s in load_signatures() for a in s.anchors)
    hostile = (anchors + " .* " * 50) * (1_000_000 // (len(anchors) + 200) + 1)
    for text in (progress, hostile[:1_000_000], "NCCL error " * 100_000):
        start = time.perf_counter()
        diagnose_report(text + "\nRuntimeError: No CUDA GPUs are available\n", matrix)
        assert time.perf_counter() - start < 2.0


def test_a_500_line_issue_body_in_under_a_fifth_of_a_second(matrix: Matrix) -> None:
    lines: list[str] = []
    for r in CORPUS:
        lines += r.body.splitlines()
        if len(lines) >= 500:
            break
    body = "\n".join(lines[:500])
    best = min(_timed(lambda: diagnose_report(body, matrix)) for _ in range(3))
    assert best < 0.2


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


# --- fuzzing: structured mutations of the real reports ----------------------------------------


@st.composite
def mutated_report(draw: st.DrawFn) -> str:
    a = draw(st.sampled_from(CORPUS)).body.splitlines()
    b = draw(st.sampled_from(CORPUS)).body.splitlines()
    op = draw(st.sampled_from(["splice", "drop", "dup", "cut", "junk", "case", "bar", "indent"]))
    i = draw(st.integers(0, max(len(a) - 1, 0)))
    if op == "splice":
        a = a[:i] + b + a[i:]
    elif op == "drop":
        a = a[:i] + a[i + 1 :]
    elif op == "dup":
        a = a[: i + 1] + a[i:] * draw(st.integers(1, 50))
    elif op == "cut":
        text = "\n".join(a)
        return text[: draw(st.integers(0, len(text)))]
    elif op == "junk":
        a.insert(i, draw(st.text(max_size=200)))
    elif op == "case":
        a = [x.upper() if draw(st.booleans()) else x.lower() for x in a]
    elif op == "bar":
        a.insert(i, "\r".join(f"{k}%|{'#' * k}" for k in range(100)) * 20)
    else:
        a = ["    " + x for x in a]
    return "\n".join(a)


@settings(max_examples=250, deadline=None)
@given(mutated_report())
def test_mutated_real_reports_never_crash_and_stay_fast(text: str) -> None:
    matrix = load_matrix()
    start = time.perf_counter()
    d = diagnose_report(text, matrix)
    assert time.perf_counter() - start < 1.0
    for f in d.findings:
        assert f.severity in ("error", "warning", "info") and f.fix
        if f.severity == "error":
            assert f.evidence, f  # an error names what it rests on


def test_signature_report_lists_are_up_to_date() -> None:
    """`reports` in signatures.toml is what tools/signature_reports.py derives from the corpus."""
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run(
        [sys.executable, str(REPO / "tools/signature_reports.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
