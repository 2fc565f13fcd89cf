"""torchship.lock: the exact stack, every package pinned with hashes, and its content hash.

The lock is TOML (schema documented in docs/lock.md). `read_lock` refuses unknown fields and
checks every value by its rule (validate.py) before anything renders it. `content_hash` covers
everything else in the file and `spec_hash` the spec it was made from (recomputed from the
lock's own `[spec]` on every read, and compared with the spec beside it by
`torchship lock --check`). Both are plain sha256 sums: they catch accidental edits and damage,
never an attacker, who can recompute them. Image tags and labels use `content_hash`.

A lock holds one or more *environments*: the primary one (`[environment]` and `[[package]]`,
the build the resolver chose for the GPU targets on the first platform, which images install)
and, from schema 2, others under `[environments.NAME]` — `cpu` for machines without a usable
GPU — with the same versions of every package except torch's build and its CUDA wheels. From
schema 3 a lock spans several platforms: each environment names its platform (`target =
"linux-aarch64"`) beside uv's `platform`, and those of platforms other than the first are named
`<platform>-<build>` (`linux-aarch64-cu130`, `macos-arm64-cpu`). A lock for linux-x86_64 alone
is written as schema 2, byte for byte as before. Schema 1 locks (one environment) are still read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from torchship._atomic import write_text_atomic
from torchship._version import __version__
from torchship.compat.platforms import LINUX_X86_64
from torchship.errors import LockFileError, LockOutOfDateError, UsageError, excerpt
from torchship.lock.raw import REGENERATE, load
from torchship.lock.validate import (
    SHA256,
    Table,
    build_name,
    check_fields,
    env_name,
    is_pytorch_index,
    locked_spec,
    package_name,
    sha256,
)
from torchship.lock.validate import version as exact_version
from torchship.spec.model import Spec, content_hash

LOCK_FILE = "torchship.lock"
LOCK_SCHEMA_VERSION = 2  # a lock for linux-x86_64 alone: what every lock was before platforms
FLEET_SCHEMA_VERSION = 3  # a lock with an environment of another platform (`target` fields)
READABLE_SCHEMAS = (1, 2, 3)
_HEADER = "# torchship.lock: written by `torchship lock`; do not edit by hand.\n"


@dataclass(frozen=True, slots=True)
class LockedPackage:
    name: str
    version: str
    hashes: tuple[str, ...]
    source: str | None = None  # the index it is published on ("https://pypi.org/simple")
    file: str | None = None  # the file taken from a find-links folder, when one served it

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "name": self.name,
                "version": self.version,
                "hashes": list(self.hashes),
                "source": self.source,
                "file": self.file,
            }
        )

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


# torch's own CUDA stack: the only packages whose presence and versions differ between a CUDA
# environment and the CPU one (torch's build aside). triton ships with CUDA builds only.
CUDA_PACKAGE_PREFIXES = ("nvidia-", "cuda-", "triton")


def is_cuda_package(name: str) -> bool:
    return name.startswith(CUDA_PACKAGE_PREFIXES)


@dataclass(frozen=True, slots=True)
class LockEnvironment:
    """One installable environment of the lock: what `torchship sync` makes into a venv."""

    name: str  # "cu130" | "cpu" | "linux-aarch64-cu130" | "macos-arm64-cpu"
    torch: str  # "2.13.0" (PyPI's default build) or "2.13.0+cpu"
    variant: str
    cuda: str | None
    python: str
    platform: str  # uv's --python-platform, "x86_64-manylinux_2_28", "aarch64-apple-darwin"
    index_url: str  # where torch comes from
    packages: tuple[LockedPackage, ...]
    # The platform's name ("linux-aarch64"); None in locks for linux-x86_64 alone (schema ≤ 2).
    target: str | None = None
    macos_min: str | None = None  # macOS: the oldest macOS its wheels install on ("14.0")
    # Beside the primary environment (whose values are the lock's own): what a CUDA build needs
    # of a machine, and the base image of a Linux one.
    base_image: str | None = None
    min_driver: str | None = None
    arch_list: tuple[str, ...] = ()

    @property
    def platform_name(self) -> str:
        """The platform it installs on: `target`, or linux-x86_64 for a lock made before
        platforms (whose `platform` is always x86_64-manylinux)."""
        return self.target or LINUX_X86_64

    @property
    def key(self) -> str:
        """What the environment installs, hashed: the cache key of its venv."""
        return content_hash(
            {
                "python": self.python,
                "platform": self.platform,
                "packages": [[p.name, p.version, sorted(p.hashes)] for p in self.packages],
            }
        )

    @property
    def short_key(self) -> str:
        return self.key.split(":", 1)[1][:12]

    def core(self) -> dict[str, Any]:
        """The fields every environment table has, in file order (new ones only when set, so
        that a lock for linux-x86_64 alone is written as it always was)."""
        return _without_none(
            {
                "torch": self.torch,
                "variant": self.variant,
                "cuda": self.cuda,
                "python": self.python,
                "target": self.target,
                "platform": self.platform,
                "macos_min": self.macos_min,
                "index_url": self.index_url,
            }
        )

    def body(self) -> dict[str, Any]:
        return _without_none(
            {
                **self.core(),
                "base_image": self.base_image,
                "min_driver": self.min_driver,
                "arch_list": list(self.arch_list) or None,
                "package": [p.to_dict() for p in self.packages],
            }
        )


@dataclass(frozen=True, slots=True)
class LockedGPU:
    name: str
    cc: str


@dataclass(frozen=True, slots=True)
class Lock:
    """Everything an image, a Kubernetes object or a doctor check needs; nothing to look up."""

    spec_hash: str
    spec: dict[str, Any]
    name: str
    torch: str  # the locked version, "2.9.1" or "2.9.1+cu126"
    variant: str  # "cu128" | "cpu"
    cuda: str | None  # "12.8"
    python: str
    platform: str  # uv's --python-platform, "x86_64-manylinux_2_28"
    index_url: str
    arch_list: tuple[str, ...]
    min_driver: str | None
    base_image: str
    glibc_min: str
    cudnn: str | None
    nccl: str | None
    gpus: tuple[LockedGPU, ...]
    driver_target: str | None
    packages: tuple[LockedPackage, ...]
    torchship_version: str = __version__
    base_digest: str | None = None  # "sha256:…" of base_image, set by `torchship image pin-base`
    environments: tuple[LockEnvironment, ...] = ()  # besides the primary one: `cpu`, …
    schema_version: int = LOCK_SCHEMA_VERSION  # a schema 1 lock keeps its own (and its hash)
    target: str | None = None  # the primary environment's platform (schema 3); None: x86_64
    macos_min: str | None = None  # when that platform is macOS

    @property
    def primary(self) -> LockEnvironment:
        """The environment the resolver chose for the targets: images install this one."""
        return LockEnvironment(
            name=self.variant,
            torch=self.torch,
            variant=self.variant,
            cuda=self.cuda,
            python=self.python,
            platform=self.platform,
            index_url=self.index_url,
            packages=self.packages,
            target=self.target,
            macos_min=self.macos_min,
            base_image=self.base_image or None,
            min_driver=self.min_driver,
            arch_list=self.arch_list,
        )

    @property
    def platform_name(self) -> str:
        """The primary environment's platform: what images are built for."""
        return self.target or LINUX_X86_64

    def platforms(self) -> tuple[str, ...]:
        """Every platform the lock has an environment for, the primary's first."""
        out: list[str] = []
        for e in self.all_environments():
            if e.platform_name not in out:
                out.append(e.platform_name)
        return tuple(out)

    def all_environments(self) -> tuple[LockEnvironment, ...]:
        return (self.primary, *self.environments)

    def environment(self, name: str) -> LockEnvironment | None:
        return next((e for e in self.all_environments() if e.name == name), None)

    def body(self) -> dict[str, Any]:
        """The lock's content without its own hash, in file order."""
        # the primary environment's packages are top-level [[package]]
        env = _without_none(
            {
                **self.primary.core(),
                "base_image": self.base_image or None,  # none off Linux (schema 3)
                "base_digest": self.base_digest,
                "min_driver": self.min_driver,
                "glibc_min": self.glibc_min or None,
                "cudnn": self.cudnn,
                "nccl": self.nccl,
                "arch_list": list(self.arch_list),
            }
        )
        targets: dict[str, Any] = {"gpus": [{"name": g.name, "cc": g.cc} for g in self.gpus]}
        if self.driver_target is not None:
            targets["driver"] = self.driver_target
        body = {
            "schema_version": self.schema_version,
            "torchship_version": self.torchship_version,
            "name": self.name,
            "spec_hash": self.spec_hash,
            "environment": env,
            "targets": targets,
            "spec": drop_none(self.spec),
            "package": [p.to_dict() for p in self.packages],
        }
        if self.environments:
            body["environments"] = {e.name: e.body() for e in self.environments}
        return body

    @property
    def content_hash(self) -> str:
        body = self.body()
        del body["torchship_version"]  # re-locking with a newer torchship changes nothing real
        return content_hash(body)

    @property
    def short_hash(self) -> str:
        return self.content_hash.split(":", 1)[1][:8]

    def to_toml(self) -> str:
        body = self.body()
        body = {"content_hash": self.content_hash, **body}
        return _HEADER + tomli_w.dumps(body, multiline_strings=False)


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: unset fields are left out."""
    return {k: drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def write_lock(lock: Lock, path: Path) -> None:
    write_text_atomic(path, lock.to_toml())


TOP_KEYS = (
    "content_hash",
    "schema_version",
    "torchship_version",
    "name",
    "spec_hash",
    "environment",
    "targets",
    "spec",
    "package",
    "environments",
)
_ENV_KEYS = ("torch", "variant", "cuda", "python", "platform", "index_url")
PRIMARY_KEYS = (
    *_ENV_KEYS,
    *("base_image", "base_digest", "min_driver", "glibc_min", "cudnn", "nccl", "arch_list"),
)
ENVIRONMENT_KEYS = (*_ENV_KEYS, "package")
# schema 3 (several platforms): each environment names its platform, and one of a platform
# other than the primary's carries its own base image and CUDA needs
_FLEET_KEYS = ("target", "macos_min")
FLEET_PRIMARY_KEYS = (*PRIMARY_KEYS, *_FLEET_KEYS)
FLEET_ENVIRONMENT_KEYS = (*ENVIRONMENT_KEYS, *_FLEET_KEYS, "base_image", "min_driver", "arch_list")
TARGET_KEYS = ("gpus", "driver")
GPU_KEYS = ("name", "cc")
PACKAGE_KEYS = ("name", "version", "hashes", "source", "file")


def read_lock(path: Path) -> Lock:
    """Read and verify a lock file: its shape (no unknown fields), every value by its rule
    (validate.py), its content hash and the hash of its own spec. Raises LockFileError naming
    the file, the field path and the fix."""
    return lock_from_toml(load(path), path)


def lock_from_toml(data: dict[str, Any], path: Path) -> Lock:
    """The lock of `path`'s parsed TOML, verified as read_lock verifies it."""
    version = data.get("schema_version")
    if type(version) is not int or version not in READABLE_SCHEMAS:
        raise LockFileError(
            f"{path}: schema_version {excerpt(version)} is not one this torchship reads "
            f"({', '.join(map(str, READABLE_SCHEMAS))})",
            "regenerate it with this torchship: `torchship lock`",
        )
    top = Table(str(path), data, "", TOP_KEYS)
    lock = _lock_from(top, version)
    check_fields(lock, str(path))
    spec = locked_spec(lock, str(path))
    if top.string("content_hash") != lock.content_hash:
        raise LockFileError(
            f"{path}:content_hash: does not match the lock's content (edited, or damaged)",
            REGENERATE,
        )
    if spec.spec_hash != lock.spec_hash:
        raise LockFileError(
            f"{path}:spec_hash: does not match the lock's own [spec] (edited after locking)",
            REGENERATE,
        )
    return lock


def _lock_from(top: Table, version: int) -> Lock:
    fleet = version >= FLEET_SCHEMA_VERSION
    env = top.table_at("environment", FLEET_PRIMARY_KEYS if fleet else PRIMARY_KEYS)
    targets = top.table_at("targets", TARGET_KEYS)
    return Lock(
        spec_hash=top.string("spec_hash"),
        spec=top.mapping("spec"),
        name=top.string("name"),
        torch=env.string("torch"),
        variant=env.string("variant"),
        cuda=env.optional("cuda"),
        python=env.string("python"),
        platform=env.string("platform"),
        index_url=env.string("index_url"),
        arch_list=env.strings("arch_list"),
        min_driver=env.optional("min_driver"),
        # off Linux (schema 3) there is neither; check_fields requires both on Linux
        base_image=(env.optional("base_image") if fleet else env.string("base_image")) or "",
        glibc_min=(env.optional("glibc_min") if fleet else env.string("glibc_min")) or "",
        cudnn=env.optional("cudnn"),
        nccl=env.optional("nccl"),
        gpus=tuple(
            LockedGPU(g.string("name"), g.string("cc"))
            for g in targets.tables("gpus", GPU_KEYS, required=False)
        ),
        driver_target=targets.optional("driver"),
        packages=_packages(top),
        torchship_version=top.optional("torchship_version") or "",
        base_digest=env.optional("base_digest"),
        environments=_environments(top, fleet),
        schema_version=version,
        target=env.optional("target"),
        macos_min=env.optional("macos_min"),
    )


def _packages(t: Table) -> tuple[LockedPackage, ...]:
    return tuple(
        LockedPackage(
            p.string("name"),
            p.string("version"),
            p.strings("hashes"),
            p.optional("source"),
            p.optional("file"),
        )
        for p in t.tables("package", PACKAGE_KEYS)
    )


def _environments(top: Table, fleet: bool) -> tuple[LockEnvironment, ...]:
    raw = top.mapping("environments", required=False)
    for name in raw:  # checked before it is used in a field path or a cache folder
        try:
            env_name(name) if fleet else build_name(name)
        except ValueError as bad:
            raise top.fail("environments", str(bad)) from None
    envs = Table(top.file, raw, "environments.", tuple(raw))
    out = []
    for name in raw:
        e = envs.table_at(name, FLEET_ENVIRONMENT_KEYS if fleet else ENVIRONMENT_KEYS)
        out.append(
            LockEnvironment(
                name=name,
                torch=e.string("torch"),
                variant=e.string("variant"),
                cuda=e.optional("cuda"),
                python=e.string("python"),
                platform=e.string("platform"),
                index_url=e.string("index_url"),
                packages=_packages(e),
                target=e.optional("target"),
                macos_min=e.optional("macos_min"),
                base_image=e.optional("base_image"),
                min_driver=e.optional("min_driver"),
                arch_list=e.strings("arch_list") if "arch_list" in e.table else (),
            )
        )
    return tuple(out)


def pin_base(lock: Lock, digest: str, path: Path) -> Lock:
    """The lock with its base image pinned by `digest`, written atomically to `path`."""
    if not SHA256.fullmatch(digest):
        raise LockFileError(
            f"base digest {excerpt(digest)} is not sha256:<64 hex digits>",
            "copy it from `docker buildx imagetools inspect IMAGE` or the registry",
        )
    pinned = replace(lock, base_digest=digest)
    write_lock(pinned, path)
    return pinned


def spec_changes(spec: Spec, lock: Lock) -> list[str]:
    """What changed in the spec since the lock, field by field ("torch: 2.9.1 → 2.10.0")."""
    # the hash of the lock's own [spec], not the one it records: a lock whose spec was edited
    # while its spec_hash was kept is out of date, not up to date
    locked = locked_spec(lock, LOCK_FILE).spec_hash
    if spec.spec_hash == locked == lock.spec_hash:
        return []
    out: list[str] = []
    _diff(drop_none(lock.spec), drop_none(spec.to_dict()), "", out)
    return out or ["the spec changed"]


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _diff(old.get(key), new.get(key), f"{path}{key}.", out)
        return
    if old != new:
        out.append(f"{path.rstrip('.')}: {old!r} → {new!r}")


def lock_changes(old: Lock | None, new: Lock) -> list[str]:
    """What a re-lock did to the pins, one line per change, each naming the environments it
    touched: `+ tqdm 4.67.1 (cu130, cpu)`, `- rich 14.0.0 (cpu)`, `numpy 2.4.5 → 2.4.6 (…)`."""
    if old is None:
        return []
    before = {e.name: e for e in old.all_environments()}
    after = {e.name: e for e in new.all_environments()}
    lines: dict[str, list[str]] = {}
    for name in [*after, *(n for n in before if n not in after)]:
        if name not in before:
            lines.setdefault(f"+ environment {name}", []).append(name)
            continue
        if name not in after:
            lines.setdefault(f"- environment {name}", []).append(name)
            continue
        was = {p.name: p.version for p in before[name].packages}
        now = {p.name: p.version for p in after[name].packages}
        for pkg in sorted(set(was) | set(now)):
            if pkg not in was:
                text = f"+ {pkg} {now[pkg]}"
            elif pkg not in now:
                text = f"- {pkg} {was[pkg]}"
            elif was[pkg] != now[pkg]:
                text = f"{pkg} {was[pkg]} → {now[pkg]}"
            else:
                continue
            lines.setdefault(text, []).append(name)
    return [f"{text} ({', '.join(envs)})" for text, envs in lines.items()]


def check_lock(spec: Spec, lock: Lock, lock_path: Path) -> None:
    changes = spec_changes(spec, lock)
    if changes:
        raise LockOutOfDateError(
            f"{lock_path} is out of date: " + "; ".join(changes),
            "run `torchship lock` to update it",
        )


def export_requirements(lock: Lock, index: bool = True, env: str | None = None) -> str:
    """requirements.txt with hashes, installable with `pip install --require-hashes -r`.
    `index=False` leaves out the PyTorch index line (the Dockerfile passes its own); `env`
    names an environment of the lock (default: the primary one)."""
    check_fields(lock, LOCK_FILE)  # a lock made in memory is held to the file's rules too
    e = lock.primary if env is None else lock_environment(lock, env)
    lines = [
        f"# exported from {LOCK_FILE} ({lock.content_hash}) by torchship {__version__}",
        f"# environment {e.name}: torch {e.torch} for Python {e.python} on {e.platform}",
    ]
    if index and is_pytorch_index(e.index_url):
        lines.append(f"--extra-index-url {e.index_url}")
    lines += requirement_lines(e.packages)
    return "\n".join(lines) + "\n"


def requirement_lines(packages: tuple[LockedPackage, ...]) -> list[str]:
    """`name==version` with its `--hash=` lines, each value checked again as it is written:
    a requirements file has no quoting, so a space or `;` would be an option or a marker."""
    out = []
    for p in packages:
        try:
            package_name(p.name)
            exact_version(p.version)
            for h in p.hashes:
                sha256(h)
        except ValueError as e:
            raise LockFileError(
                f"package {excerpt(p.name)} cannot be written as a requirement: {e}", REGENERATE
            ) from None
        hashes = " \\\n    ".join(f"--hash={h}" for h in p.hashes)
        out.append(p.pin + (f" \\\n    {hashes}" if hashes else ""))
    return out


def lock_environment(lock: Lock, name: str) -> LockEnvironment:
    """The environment called `name`, or a UsageError listing the ones there are."""
    found = lock.environment(name)
    if found is None:
        names = ", ".join(e.name for e in lock.all_environments())
        extra = "" if lock.schema_version > 1 else " (a schema 1 lock: re-lock for a cpu one)"
        raise UsageError(
            f"the lock of {lock.name} has no environment {name!r}; it has {names}{extra}",
            f"pick one of: {names}" if lock.schema_version > 1 else "run `torchship lock`",
        )
    return found
