"""Every value of a lock is checked before anything renders it.

A lock's values reach a Dockerfile's `FROM` and `RUN` lines, requirements.txt and uv's command
line, so a hand-edited lock could carry a command (`numpy==2.0; curl … | sh`) or another index
(`--extra-index-url …`). `read_lock` checks the file's shape with `Table` (known keys only, each
of its type) and then every value with `check_fields`: the spec's own rules where it has them
(names, Python, CUDA, drivers, glibc, arch tokens; the embedded spec is read by the spec loader
itself, apt package names included) and the rules below where it has none (exact versions,
package names, image references, index URLs, platforms, wheel files, sha256 hashes), and then
how the values of each environment agree (`check_consistency`: its name, its platform's name
and uv's platform string tell one story). The renderers quote what they write as well.

None of this makes a lock trustworthy: `content_hash` and `spec_hash` are plain sha256 sums that
anyone can recompute. They catch accidental edits and corruption; validation keeps a value from
becoming a command; which packages a lock pins is only as good as the review of the lock.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from torchship.compat.matrix import PYTORCH_INDEX
from torchship.compat.platforms import INFO, PLATFORMS
from torchship.errors import LockFileError, SpecError, excerpt, key_text
from torchship.lock.raw import REGENERATE
from torchship.spec.fields import (
    is_package_name,
    parse_cuda,
    parse_driver,
    parse_glibc,
    parse_python,
)
from torchship.versions import parse_version

if TYPE_CHECKING:
    from torchship.lock.model import Lock, LockEnvironment
    from torchship.spec.model import Spec


def or_regenerate(fix: str) -> str:
    """A fix of the value itself, with re-locking as the other way out."""
    return f"{fix.rstrip('.')}{'' if fix.endswith('?') else '.'} Or {REGENERATE}"


SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
BUILD_NAME = re.compile(r"[a-z][a-z0-9]{1,15}")  # cpu, cu130, rocm64: a variant's name
# an environment of a platform other than the primary's: `linux-aarch64-cu130`, `macos-arm64-cpu`
ENV_NAME = re.compile(rf"(?:({'|'.join(map(re.escape, PLATFORMS))})-)?({BUILD_NAME.pattern})")
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # the spec's rule (spec/load.py NAME_RE)
# uv's --python-platform as torchship locks it, per OS (PlatformInfo.uv_target writes them);
# env/pick.py reads the same forms.
UV_PLATFORMS = {
    "linux": re.compile(r"(x86_64|aarch64)-manylinux_(\d+)_(\d+)"),
    "windows": re.compile(r"(x86_64)-pc-windows-msvc"),
    "macos": re.compile(r"(x86_64|aarch64)-apple-darwin"),
}
PLATFORM = re.compile("|".join(f"(?:{r.pattern})" for r in UV_PLATFORMS.values()))

# An image reference, from the grammar of github.com/distribution/reference (regexp.go):
# [domain[:port]/]path-component(/path-component)*[:tag][@digest], ASCII only.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_WITH_TAG = re.compile(rf"{_NAME}:{_TAG}", re.ASCII)
IMAGE_REF = re.compile(rf"{_NAME}(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
# RFC 3986's characters, less `$`: pip and uv expand ${VAR} in requirements files.
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=%-]+")

_PRINTABLE_ASCII = re.compile(r"[!-~]+")  # one word of visible ASCII characters
Check = Callable[[str], object]  # raises ValueError with a one-line reason


# -- values ------------------------------------------------------------------------------


def text(value: str) -> str:
    """Any string of a lock: no control or format characters (a newline ends a Dockerfile
    instruction and a requirements line), no space at either end."""
    for c in value:
        if unicodedata.category(c).startswith("C"):
            raise ValueError(f"{excerpt(value)} holds the control character {c!r}")
    if value != value.strip():
        raise ValueError(f"{excerpt(value)} has spaces at its ends")
    return value


def word(value: str, kind: str) -> str:
    """`value` when it is one word wherever it is written (not empty, no whitespace, no
    control character); else ValueError saying it is not `kind`."""
    if _PRINTABLE_ASCII.fullmatch(value):  # the fast path: nearly every value
        return value
    if not value or any(c.isspace() or unicodedata.category(c).startswith("C") for c in value):
        raise ValueError(f"{excerpt(value)} is not {kind}")
    return value


def _parsed(value: str, kind: str, parse: Callable[[str], object]) -> str:
    """`value` when it is one word that `parse` (a spec rule) takes."""
    try:
        parse(word(value, kind))
    except ValueError:
        raise ValueError(f"{excerpt(value)} is not {kind}") from None
    return value


def sha256(value: str) -> str:
    if not SHA256.fullmatch(value):
        raise ValueError(f"{excerpt(value)} is not sha256:<64 lower-case hex digits>")
    return value


def build_name(value: str) -> str:
    if not BUILD_NAME.fullmatch(value):
        raise ValueError(f"{excerpt(value)} is not a build name such as 'cpu' or 'cu130'")
    return value


def env_name(value: str) -> str:
    """An environment's name: its build (`cpu`), after its platform when that is not the
    primary's (`linux-aarch64-cu130`)."""
    if not ENV_NAME.fullmatch(value):
        raise ValueError(
            f"{excerpt(value)} is not a build name such as 'cpu' or 'cu130', after its "
            "platform where that is not the primary's ('linux-aarch64-cu130')"
        )
    return value


def target(value: str) -> str:
    """A platform's name as torchship writes it (`linux-aarch64`), never an alias."""
    if value not in PLATFORMS:
        raise ValueError(f"{excerpt(value)} is not a platform: one of {', '.join(PLATFORMS)}")
    return value


def project_name(value: str) -> str:
    if not PROJECT_NAME.fullmatch(value):
        raise ValueError(f"{excerpt(value)} is not a project name (a-z, 0-9, '.', '_', '-')")
    return value


def version(value: str) -> str:
    """An exact PEP 440 version, as a pin writes it (`2.9.1+cu126`)."""
    from packaging.version import Version

    return _parsed(value, "an exact PEP 440 version such as '2.9.1'", Version)


def torch_version(value: str) -> str:
    """torch's version as the lock pins it and an image tag shows it: exact, with a build tag
    (`+cu128`) or none, never an epoch (`1!2.9.1`: torch has none, and no tag holds a `!`)."""
    version(value)
    if "!" in value:
        raise ValueError(f"{excerpt(value)} has an epoch ('N!'), which no torch release has")
    return value


def package_name(value: str) -> str:
    return _parsed(value, "a Python package name (PEP 508)", _package_name)


def _package_name(value: str) -> None:
    if not is_package_name(value):
        raise ValueError(value)


def dotted(value: str) -> str:
    """A dotted numeric version: cuDNN and NCCL as their wheels pin them."""
    return _parsed(value, "a dotted version such as '9.20.0.48'", parse_version)


def driver(value: str) -> str:
    return _parsed(value, "an NVIDIA driver version such as '580.65.06'", parse_driver)


def glibc(value: str) -> str:
    return _parsed(value, "a glibc version such as '2.28'", parse_glibc)


def python(value: str) -> str:
    kind = "a Python version such as '3.12'"
    _parsed(value, kind, parse_python)
    if parse_python(value) != value:
        raise ValueError(f"{excerpt(value)} is not {kind}")
    return value


def cuda(value: str) -> str:
    kind = "a CUDA version such as '12.8'"
    _parsed(value, kind, parse_cuda)
    if value in ("auto", "cpu") or parse_cuda(value) != value:
        raise ValueError(f"{excerpt(value)} is not {kind}")
    return value


def arch(value: str) -> str:
    from torchship.compat.archs import parse_arch

    return _parsed(value, "an arch token such as 'sm_90'", parse_arch)


def compute_capability(value: str) -> str:
    from torchship.compat.archs import parse_cc

    kind = "a compute capability such as '9.0'"
    _parsed(value, kind, parse_cc)
    major, minor = parse_cc(value)
    if f"{major}.{minor}" != value:
        raise ValueError(f"{excerpt(value)} is not {kind}")
    return value


def gpu_name(value: str) -> str:
    if not text(value) or len(value) > 64:
        raise ValueError(f"{excerpt(value)} is not a GPU name such as 'H100' or 'RTX 4090'")
    return value


def platform(value: str) -> str:
    if not PLATFORM.fullmatch(value):
        raise ValueError(
            f"{excerpt(value)} is not a platform such as 'x86_64-manylinux_2_28', "
            "'x86_64-pc-windows-msvc' or 'aarch64-apple-darwin'"
        )
    return value


def uv_platform_problem(name: str, value: str) -> str | None:
    """Why uv's platform string `value` is not one of platform `name`, or None: an
    environment of linux-aarch64 is resolved for `aarch64-manylinux_X_Y`, and so on."""
    info = INFO[name]
    m = UV_PLATFORMS[info.os].fullmatch(value)
    machine = "aarch64" if info.machine == "arm64" else info.machine  # uv says aarch64
    if m is None or m.group(1) != machine:
        return f"{excerpt(value)} is not a platform of {name} (such as {info.uv_target()!r})"
    return None


def base_image(value: str) -> str:
    """The lock's base image: `name:tag` (its digest, when pinned, is `base_digest`)."""
    if not IMAGE_WITH_TAG.fullmatch(value):
        raise ValueError(
            f"{excerpt(value)} is not an image reference with a tag ('nvidia/cuda:12.8.1-base')"
        )
    return value


def image_ref(value: str) -> str:
    """Any image reference: `[registry/]name[:tag][@digest]`."""
    if not IMAGE_REF.fullmatch(value):
        raise ValueError(f"{excerpt(value)} is not an image reference such as 'python:3.12-slim'")
    return value


def index_url(value: str) -> str:
    """A package index: http(s), a host, one word, nothing a shell or pip would expand, and no
    user part: `https://download.pytorch.org@evil.example/` is evil.example's, and a password
    in a lock or a Dockerfile is one every reader of it has."""
    kind = "an http(s) URL of a package index, in one word"
    try:
        parts = urlsplit(word(value, kind))
        host = parts.hostname
    except ValueError:  # urlsplit: an unbalanced `[` of an IPv6 host
        raise ValueError(f"{excerpt(value)} is not {kind}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{excerpt(value)} is not {kind}")
    if not _URL_CHARS.fullmatch(value):
        raise ValueError(f"{excerpt(value)} holds what a URL does not ($, quotes, backslashes…)")
    if "@" in parts.netloc:
        raise ValueError(
            f"{excerpt(value)} has a user part before '@' (its host is {excerpt(host)}); "
            "credentials for an index go in ~/.netrc, never in its URL"
        )
    return value


PYTORCH_HOST = urlsplit(PYTORCH_INDEX).hostname


def is_pytorch_index(url: str) -> bool:
    """Whether `url` is on the PyTorch index's host: its host compared, never a substring
    (`https://evil.example/download.pytorch.org/` is not)."""
    try:
        return urlsplit(url).hostname == PYTORCH_HOST
    except ValueError:
        return False


def wheel_file(value: str) -> str:
    """The wheel a find-links folder served: a file name, never a path."""
    kind = "a wheel's file name"
    if "/" in value or "\\" in value:
        raise ValueError(f"{excerpt(value)} is a path, not {kind}")
    from torchship.lock.wheels import valid_wheel_filename

    if not valid_wheel_filename(word(value, kind)):
        raise ValueError(f"{excerpt(value)} is not {kind}")
    return value


# -- the file's shape --------------------------------------------------------------------


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


class Table:
    """One table of a lock file: a key it does not know is refused with the closest valid
    name (as the spec loader's FieldReader does), and every read names the field path."""

    def __init__(self, file: str, table: dict[str, Any], prefix: str, allowed: tuple[str, ...]):
        self.file, self.table, self.prefix = file, table, prefix
        for key in table:
            if key not in allowed:
                import difflib  # only to name a misspelt key

                close = difflib.get_close_matches(key, allowed, n=1)
                fix = f"did you mean {close[0]!r}?" if close else "the fields here are "
                fix += "" if close else (", ".join(allowed) or "none")
                raise LockFileError(f"{file}:{self.path(key)}: unknown field", or_regenerate(fix))

    def path(self, key: str) -> str:
        return f"{self.prefix}{key_text(key)}"

    def fail(self, key: str, problem: str, index: int | None = None) -> LockFileError:
        at = "" if index is None else f"[{index}]"
        return LockFileError(f"{self.file}:{self.path(key)}{at}: {problem}", REGENERATE)

    def _get(self, key: str, kind: type, name: str, required: bool) -> Any:
        value = self.table.get(key)
        if value is None and not required:
            return None
        if value is None:
            raise self.fail(key, f"is missing (must be {name})")
        if type(value) is not kind:
            raise self.fail(key, f"must be {name}, not {_kind(value)}")
        return value

    def string(self, key: str) -> str:
        return str(self._get(key, str, "a string", True))

    def optional(self, key: str) -> str | None:
        value = self._get(key, str, "a string", False)
        return None if value is None else str(value)

    def strings(self, key: str) -> tuple[str, ...]:
        items = self._get(key, list, "a list of strings", True)
        for i, item in enumerate(items):
            if type(item) is not str:
                raise self.fail(key, f"must be a string, not {_kind(item)}", i)
        return tuple(items)

    def mapping(self, key: str, required: bool = True) -> dict[str, Any]:
        value = self._get(key, dict, "a table", required)
        return {} if value is None else dict(value)

    def table_at(self, key: str, allowed: tuple[str, ...], required: bool = True) -> Table:
        return Table(self.file, self.mapping(key, required), f"{self.path(key)}.", allowed)

    def tables(self, key: str, allowed: tuple[str, ...], required: bool = True) -> list[Table]:
        items = self._get(key, list, "a list of tables", required) or []
        out = []
        for i, item in enumerate(items):
            if type(item) is not dict:
                raise self.fail(key, f"must be a table, not {_kind(item)}", i)
            out.append(Table(self.file, item, f"{self.path(key)}[{i}].", allowed))
        return out


# -- the values of a whole lock ----------------------------------------------------------


def check_fields(lock: Lock, file: str) -> None:
    """Every value of `lock` by its rule, then how they agree (check_consistency);
    LockFileError naming `file` and the field path of the first one that breaks it. Pure: also
    guards locks made in memory before rendering."""
    for path, value, check in _fields(lock):
        if value is None:
            continue
        try:
            check(value)
        except ValueError as e:
            raise LockFileError(f"{file}:{path}: {e}", REGENERATE) from None
    for path, problem in check_consistency(lock):
        raise LockFileError(f"{file}:{path}: {problem}", REGENERATE)


def check_consistency(lock: Lock) -> Iterator[tuple[str, str]]:
    """(field path, problem) where the values of an environment, each valid alone, disagree:
    uv's platform string of another platform than the environment's `target`, a name whose
    platform or build is not the environment's, an environment named like another one, a
    macOS floor off macOS, a base image off Linux. A hand-edited platform is caught here."""
    primary = lock.primary
    fleet = lock.schema_version >= 3
    named = ((f"environments.{e.name}.", e) for e in lock.environments)
    for where, e in (("environment.", primary), *named):
        if fleet and e.target is None:
            yield where + "target", "is missing (every environment of a schema 3 lock names it)"
        name = e.platform_name
        problem = uv_platform_problem(name, e.platform)
        if problem:
            yield where + "platform", problem
        os_ = INFO[name].os
        if (e.macos_min is None) == (os_ == "macos"):
            has = "is missing (a macOS" if e.macos_min is None else "is set (only a macOS"
            yield where + "macos_min", f"{has} environment has one); target is {name}"
        if os_ == "linux" and e is primary and not lock.base_image:
            yield where + "base_image", "is missing (a Linux environment has its base image)"
        if os_ == "linux" and e is primary and not lock.glibc_min:
            yield where + "glibc_min", "is missing (a Linux environment has its glibc floor)"
        if e is not primary and e.base_image is not None and os_ != "linux":
            yield where + "base_image", f"is set, but {name} has no container images"
        if e is not primary and e.cuda is None and (e.min_driver or e.arch_list):
            field = "min_driver" if e.min_driver else "arch_list"
            yield where + field, "is set on an environment without CUDA"
    for e in lock.environments:
        yield from _name_problems(e, primary)


def _name_problems(e: LockEnvironment, primary: LockEnvironment) -> Iterator[tuple[str, str]]:
    m = ENV_NAME.fullmatch(e.name)
    if m is None:
        return  # refused by its own rule already
    prefix, build = m.group(1), m.group(2)
    where = f"environments.{e.name}"
    if e.name == primary.name:
        yield where, "has the primary environment's name: one name, one environment"
    elif build != e.variant:
        yield where, f"is named for build {build}, but its variant is {e.variant!r}"
    elif prefix is None and e.platform_name != primary.platform_name:
        other = f"its target {e.platform_name} is not the primary's ({primary.platform_name})"
        yield where, f"is named without its platform, but {other}"
    elif prefix is not None and prefix != e.platform_name:
        yield where, f"is named for {prefix}, but its target is {e.platform_name}"
    elif prefix is not None and prefix == primary.platform_name:
        yield where, f"names its platform, which is the primary's ({prefix}): call it {build}"


def _fields(lock: Lock) -> Iterator[tuple[str, str | None, Check]]:
    yield "name", lock.name, project_name
    yield "spec_hash", lock.spec_hash, sha256
    yield "torchship_version", lock.torchship_version or None, version
    env = "environment."
    yield env + "base_image", lock.base_image or None, base_image  # none off Linux
    yield env + "base_digest", lock.base_digest, sha256
    yield env + "min_driver", lock.min_driver, driver
    yield env + "glibc_min", lock.glibc_min or None, glibc
    yield env + "cudnn", lock.cudnn, dotted
    yield env + "nccl", lock.nccl, dotted
    for i, a in enumerate(lock.arch_list):
        yield f"{env}arch_list[{i}]", a, arch
    for i, g in enumerate(lock.gpus):
        yield f"targets.gpus[{i}].name", g.name, gpu_name
        yield f"targets.gpus[{i}].cc", g.cc, compute_capability
    yield "targets.driver", lock.driver_target, driver
    yield from _environment(lock.primary, env, "package")
    yield env + "target", lock.target, target
    yield env + "macos_min", lock.macos_min, dotted
    for e in lock.environments:
        # before the name is used in a path
        yield "environments", e.name, env_name if lock.schema_version >= 3 else build_name
        where = f"environments.{e.name}."
        yield where + "target", e.target, target
        yield where + "macos_min", e.macos_min, dotted
        yield where + "base_image", e.base_image, base_image
        yield where + "min_driver", e.min_driver, driver
        for i, a in enumerate(e.arch_list):
            yield f"{where}arch_list[{i}]", a, arch
        yield from _environment(e, where, f"{where}package")


def _environment(e: LockEnvironment, where: str, packages: str) -> Iterator[Any]:
    yield where + "torch", e.torch, torch_version
    yield where + "variant", e.variant, build_name
    yield where + "cuda", e.cuda, cuda
    yield where + "python", e.python, python
    yield where + "platform", e.platform, platform
    yield where + "index_url", e.index_url, index_url
    for i, p in enumerate(e.packages):
        at = f"{packages}[{i}]."
        yield at + "name", p.name, package_name
        yield at + "version", p.version, version
        for j, h in enumerate(p.hashes):
            yield f"{at}hashes[{j}]", h, sha256
        yield at + "hashes", None if p.hashes else "[]", _no_hashes
        yield at + "source", p.source, index_url
        yield at + "file", p.file, wheel_file


def _no_hashes(_: str) -> None:
    raise ValueError("is empty; every pin carries the sha256 of its files")


def locked_spec(lock: Lock, file: str) -> Spec:
    """The lock's `[spec]` read by the spec loader's own rules (unknown fields, names,
    versions, apt packages), with every string held to `text`."""
    from torchship.spec.load import spec_from_table

    try:
        spec = spec_from_table(dict(lock.spec), file, lock.name, "spec.")
    except SpecError as e:
        raise LockFileError(e.message, or_regenerate(e.hint)) from None
    for path, value in _strings(lock.spec, "spec"):
        try:
            text(value)
        except ValueError as e:
            raise LockFileError(f"{file}:{path}: {e}", REGENERATE) from None
    return spec


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
