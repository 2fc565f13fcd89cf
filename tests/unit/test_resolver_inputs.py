"""Inputs the resolver once took for something else: a post-release for its final release, a
compute capability no GPU has, the last of two pins, CUDA 12.99 for any 12.x. Each is refused
or taken exactly, at the parser and at `torchship resolve` (flags and spec) alike.

Synthetic inputs: each is a case an adversarial tester wrote, not real-world material.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.conftest import run_cli
from torchship.compat import Matrix, lookup_gpu
from torchship.compat.archs import parse_arch, parse_cc
from torchship.compat.request import domain_pins
from torchship.errors import UnknownGPUError
from torchship.spec.fields import parse_cuda, parse_torch

H100 = ("--gpu", "H100", "--driver", "580.65.06")


def spec_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "torchship.toml"
    path.write_text(f'name = "demo"\npython = "3.12"\n{body}\n')
    return path


def error_lines(stderr: str) -> tuple[str, str]:
    """The error and hint lines of a usage error: exactly those two, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), stderr
    return lines[0], lines[1]


# --- 1. pre-, post- and dev-releases; local versions -------------------------------------


@pytest.mark.parametrize(
    ("text", "pinned"),
    [
        ("2.9.1.post1", "==2.9.1.post1"),
        ("2.10.0rc1", "==2.10.0rc1"),
        ("2.10.0.dev20250101", "==2.10.0.dev20250101"),
        ("2.9rc1", "==2.9rc1"),  # not ==2.9.*: that would take the final 2.9.x
        ("2.9.1", "==2.9.1"),
        ("2.9", "==2.9.*"),
    ],
)
def test_parse_torch_pins_what_is_written(text: str, pinned: str) -> None:
    assert parse_torch(text) == (SpecifierSet(pinned), None)


def test_parse_torch_keeps_the_cuda_of_a_local_version() -> None:
    assert parse_torch("2.9.1+cu128") == (SpecifierSet("==2.9.1"), "12.8")


@pytest.mark.parametrize(
    ("torch", "kind", "final"),
    [
        ("2.9.1.post1", "post", "2.9.1"),
        ("2.10.0rc1", "pre", "2.10.0"),
        ("2.10.0.dev1", "dev", "2.10.0"),
    ],
)
def test_cli_refuses_a_non_final_release(torch: str, kind: str, final: str) -> None:
    out = run_cli("resolve", *H100, "--torch", torch)
    assert out.returncode == 2 and out.stdout == ""
    error, hint = error_lines(out.stderr)
    assert error.startswith(f"error: --torch: torch '{torch}': a {kind}-release, not a final")
    assert hint == f"hint: use the final release: --torch {final}"


def test_cli_refuses_a_local_version_in_a_specifier() -> None:
    out = run_cli("resolve", *H100, "--torch", "==2.9.1+cu128")
    assert out.returncode == 2
    error, hint = error_lines(out.stderr)
    assert "a local version (+cu128) is not a torch release" in error
    assert "refresh the matrix" not in hint and hint == "hint: use --torch 2.9.1 --cuda 12.8"


def test_cli_still_refuses_a_range_past_the_matrix_as_before() -> None:
    out = run_cli("resolve", *H100, "--torch", ">=2.20")
    assert out.returncode == 2
    error, hint = error_lines(out.stderr)
    assert "matches no release torchship knows" in error and "gen_matrix" in hint


def test_spec_refuses_a_post_release(tmp_path: Path) -> None:
    spec_file(tmp_path, 'torch = "2.13.0.post1"')
    out = run_cli("resolve", str(tmp_path))
    assert out.returncode == 2
    error, hint = error_lines(out.stderr)
    assert ":torch: torch '2.13.0.post1': a post-release" in error
    assert hint == 'hint: use the final release: torch = "2.13.0"'


def test_spec_refuses_a_local_version_in_a_specifier(tmp_path: Path) -> None:
    spec_file(tmp_path, 'torch = "==2.9.1+cu128"')
    out = run_cli("resolve", str(tmp_path))
    assert out.returncode == 2
    error, hint = error_lines(out.stderr)
    assert ":torch: " in error and "local version (+cu128)" in error
    assert hint == 'hint: use torch = "2.9.1" and cuda = "12.8"'


# --- 2. compute capabilities that no GPU has ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "cc"),
    [
        ("sm_10", (1, 0)),
        ("sm_90", (9, 0)),
        ("sm_100", (10, 0)),
        ("sm_101", (10, 1)),
        ("sm_103", (10, 3)),
        ("sm_110", (11, 0)),
        ("sm_120", (12, 0)),
        ("sm_121", (12, 1)),
        ("sm_199", (19, 9)),  # a plausible future one
        ("compute_120", (12, 0)),
        ("1.0", (1, 0)),
        ("12.1", (12, 1)),
        ("19.9", (19, 9)),
    ],
)
def test_real_and_plausible_capabilities_parse(text: str, cc: tuple[int, int]) -> None:
    assert parse_cc(text) == cc


@pytest.mark.parametrize(
    "text", ["sm_900", "sm_999", "sm_200", "sm_05", "sm_099", "sm_9", "99.9", "0.0", "20.0", "09.0"]
)
def test_impossible_capabilities_do_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match="X from 1 to 19"):
        parse_cc(text)


def test_arch_tokens_keep_their_suffix() -> None:
    a = parse_arch("sm_100f")
    assert (a.cc, a.suffix, a.token) == ((10, 0), "f", "sm_100f")
    with pytest.raises(ValueError, match="not an arch token"):
        parse_arch("compute_900")


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("sm_9", "sm_90"),
        ("9.0a", "sm_90a"),
        ("10.0f", "sm_100f"),
        ("sm_900", "sm_90"),
        ("sm_1200", "sm_120"),
        ("compute_90a", "sm_90a"),
        ("9.00", "9.0"),
    ],
)
def test_malformed_architecture_suggests_the_one_meant(
    matrix: Matrix, text: str, suggestion: str
) -> None:
    with pytest.raises(UnknownGPUError) as e:
        lookup_gpu(matrix, text)
    assert e.value.suggestions == (suggestion,) and e.value.exit_code == 2
    assert e.value.hint == f"did you mean '{suggestion}'?"


@pytest.mark.parametrize("text", ["sm_999", "99.9", "0.0", "sm_05", "20.0"])
def test_impossible_architecture_is_an_unknown_gpu(matrix: Matrix, text: str) -> None:
    with pytest.raises(UnknownGPUError) as e:
        lookup_gpu(matrix, text)
    assert e.value.suggestions == () and "X from 1 to 19" in e.value.hint


@pytest.mark.parametrize("gpu", ["sm_900", "sm_999", "99.9", "0.0"])
def test_cli_refuses_an_impossible_gpu(gpu: str) -> None:
    out = run_cli("resolve", "--torch", "2.9.1", "--gpu", gpu)
    assert out.returncode == 2 and out.stdout == ""
    error, _ = error_lines(out.stderr)
    assert error == f"error: --gpu: unknown GPU '{gpu}'"


def test_cli_still_takes_real_architectures() -> None:
    out = run_cli("resolve", "--torch", "2.9.1", "--gpu", "sm_121", "--gpu", "10.3", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"]


def test_spec_names_the_gpu_field(tmp_path: Path) -> None:
    spec_file(tmp_path, 'torch = "2.9.1"\n[targets]\ngpus = ["H100", "sm_900"]')
    out = run_cli("resolve", str(tmp_path))
    assert out.returncode == 2
    error, hint = error_lines(out.stderr)
    assert error.endswith(":targets.gpus[1]: unknown GPU 'sm_900'")
    assert hint == "hint: did you mean 'sm_90'?"


# --- 3. two pins on one package ----------------------------------------------------------


def test_pins_of_one_package_combine() -> None:
    pins = domain_pins(("torchvision==0.24.1", "numpy", "torchvision>=0.20", "torchaudio"))
    assert pins == (("torchvision", "==0.24.1,>=0.20"),)
    assert domain_pins(("torchvision==0.1", "torchvision==0.28.0")) == (
        ("torchvision", "==0.1,==0.28.0"),
    )


def test_cli_contradictory_pins_reject() -> None:
    out = run_cli(
        "resolve",
        *H100,
        "--torch",
        "2.8.0+cu129",
        "--package",
        "torchvision==0.24.1",
        "--package",
        "torchvision==0.23.0",
        "--json",
    )
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert not data["ok"]
    reasons = [r["reason"] for r in data["rejected"] if r["code"] == "domain-library-unavailable"]
    assert reasons and all("==0.23.0,==0.24.1" in r for r in reasons)


def test_cli_compatible_pins_still_resolve() -> None:
    flags = ("--torch", "2.8.0+cu129", "--package", "torchvision>=0.20", "--json")
    out = run_cli("resolve", *H100, *flags, "--package", "torchvision<0.24")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["chosen"] == "2.8.0+cu129"


def test_spec_contradictory_pins_reject(tmp_path: Path) -> None:
    body = 'torch = "2.9.1"\npackages = ["torchvision==0.1", "torchvision==0.28.0"]'
    spec_file(tmp_path, body + '\n[targets]\ngpus = ["H100"]')
    out = run_cli("resolve", str(tmp_path), "--json")
    assert out.returncode == 1, out.stderr
    codes = {r["code"] for r in json.loads(out.stdout)["rejected"]}
    assert codes == {"domain-library-unavailable"}


# --- 4. a CUDA minor is taken whole ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cuda"),
    [
        ("12.99", "12.99"),
        ("12.10", "12.10"),
        ("12.8", "12.8"),
        ("12.8.1", "12.8"),
        ("12", "12"),
        ("cu128", "12.8"),
        ("99.9", "99.9"),
    ],
)
def test_parse_cuda_keeps_the_minor(text: str, cuda: str) -> None:
    assert parse_cuda(text) == cuda


@pytest.mark.parametrize("text", ["12.100", "12.", "12..8", "1.8", "12.8.x"])
def test_parse_cuda_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="is not a CUDA choice"):
        parse_cuda(text)


@pytest.mark.parametrize("cuda", ["12.99", "12.10", "99.9"])
def test_cli_cuda_without_a_build_is_not_built(cuda: str) -> None:
    out = run_cli("resolve", *H100, "--torch", "2.9.1", "--cuda", cuda, "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    tag = "cu" + cuda.replace(".", "")
    assert not data["ok"] and data["chosen"] is None
    assert {"variant": f"2.9.1+{tag}", "code": "variant-not-built"}.items() <= next(
        r for r in data["rejected"] if r["variant"].endswith(tag)
    ).items()


def test_spec_cuda_without_a_build_picks_nothing(tmp_path: Path) -> None:
    spec_file(tmp_path, 'torch = "2.9.1"\ncuda = "12.99"\n[targets]\ngpus = ["H100"]')
    out = run_cli("resolve", str(tmp_path), "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["chosen"] is None
    assert "variant-not-built" in {r["code"] for r in data["rejected"]}


def test_two_pins_of_one_extension_combine_and_contradiction_is_said() -> None:
    from torchship.compat.extensions import extension_pins

    pins = extension_pins(("xformers==0.0.29.post2", "flash-attn", "xformers==0.0.29.post3"))
    assert pins == (("xformers", "==0.0.29.post2,==0.0.29.post3"), ("flash-attn", ""))
    r = run_cli("resolve", "--gpu", "H100", "--driver", "580.65.06", "--torch", "2.6.0",
                "--package", "xformers==0.0.29.post2", "--package", "xformers==0.0.29.post3",
                "--json")  # fmt: skip
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and not doc["ok"]
    assert {x["code"] for x in doc["rejected"]} == {"extension-unpaired"}
    assert all("every one of these pins" in x["reason"] for x in doc["rejected"])
    both = ("--package", "xformers>=0.0.29", "--package", "xformers<0.0.30")
    ok = run_cli("resolve", "--gpu", "H100", "--driver", "580.65.06", "--torch", "2.6.0", *both,
                 "--json")  # fmt: skip
    assert ok.returncode == 0, ok.stdout


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--gpu", "GTX 1080", "--driver", "595.00", "--torch", "2.9.1"],
         "GTX 1080 (sm_61) is driven by the R580 branch at the newest: install an R580 driver, "
         "and 2.9.1+cu126 fits"),
        (["--glibc", "2.5", "--torch", "2.9.1"], "glibc 2.5 is older than any torch wheel needs"),
        (["--glibc", "2.17", "--torch", "2.9.1"], "glibc 2.17 runs the wheels of torch 2.0.0–"),
    ],
)  # fmt: skip
def test_nothing_fits_says_what_would(argv: list[str], says: str) -> None:
    """A driver too new for an old GPU and a glibc too old printed "nothing fits." alone."""
    r = run_cli("resolve", *argv, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and any(says in x for x in doc["suggestions"]), doc["suggestions"]


def test_a_major_alone_means_its_newest_release() -> None:
    """`--torch 2` meant exactly 2.0.0 (PEP 440's `==2`); a user means the newest 2.x."""
    assert parse_torch("2") == (SpecifierSet("==2.*"), None)
    r = run_cli("resolve", "--torch", "2", "--gpu", "H100", "--driver", "580.65.06", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["chosen"] != "2.0.0+cu118"
