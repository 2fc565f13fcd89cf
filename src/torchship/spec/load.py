"""Read and validate a spec: torchship.toml, or [tool.torchship] in pyproject.toml.

Validation happens once, here. Every error names the file and the field path
(`torchship.toml:targets.gpus[1]`) and carries a one-line fix; nothing else escapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torchship._files import parse_toml, read_user_text
from torchship.compat.platforms import parse_platform
from torchship.errors import SpecError, excerpt, key_text
from torchship.spec.fields import (
    parse_cuda,
    parse_driver,
    parse_glibc,
    parse_python,
    parse_requirement,
    parse_torch,
)
from torchship.spec.model import ImageOptions, Spec, Targets

SPEC_FILE = "torchship.toml"
PYPROJECT = "pyproject.toml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_APT_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*(=[A-Za-z0-9.+:~-]+)?$")
# Ceilings for counts and amounts no real file reaches (a million GPUs in a pool, 10**12
# dollars or GiB): what is past them is a typo or an attack, never a fleet.
MAX_COUNT = 10**6
MAX_NUMBER = 1e12

TOP_KEYS = ("name", "torch", "cuda", "python", "packages", "targets", "image")
TARGET_KEYS = ("driver", "gpus", "glibc", "allow_forward_compat", "cpu", "platforms")
IMAGE_KEYS = ("jupyter", "ssh", "cuda_extensions", "system_packages")

T = TypeVar("T")


class FieldReader:
    """Walks one table, so that every error knows its file and field path (shared by the
    project spec and the job spec)."""

    def __init__(self, file: str, table: Any, prefix: str, allowed: tuple[str, ...]):
        if not isinstance(table, dict):  # `site = 0` where a [[site]] table belongs
            where = prefix.removesuffix(".")
            raise SpecError(
                file,
                where,
                f"must be a table, not {_kind(table)}",
                "write it as [name] or { k = v }",
            )
        self.file, self.table, self.prefix = file, table, prefix
        for key in table:
            if key not in allowed:
                import difflib  # only to name a misspelt key

                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                raise SpecError(file, self.path(key_text(key)), "unknown field", hint)

    def path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def fail(self, key: str, problem: str, hint: str) -> SpecError:
        return SpecError(self.file, self.path(key), problem, hint)

    def string(self, key: str, default: str | None, example: str) -> str | None:
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(key, f"must be a string, not {_kind(value)}", f"write {example}")
        if isinstance(value, float):  # python = 3.10 reads as 3.1: never guess
            raise self.fail(
                key, f"is the number {value!r}; versions must be strings", f"quote it: {example}"
            )
        if isinstance(value, int):  # name = 2024 is "2024"; 10**400 is no one's name or version
            if abs(value) >= 10**18:
                raise self.fail(key, f"is the number {excerpt(value)}", f"write {example}")
            return str(value)
        if "\x00" in value:  # a NUL ends the string wherever it is passed on (argv, YAML, C)
            raise self.fail(key, f"{excerpt(value)} holds a NUL character", f"write {example}")
        return value

    def parsed(self, key: str, parse: Callable[[str], T], example: str) -> T | None:
        text = self.string(key, None, example)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as e:
            raise self.fail(key, str(e), f"write {example}") from None

    def integer(
        self, key: str, default: int, minimum: int, example: str, maximum: int = MAX_COUNT
    ) -> int:
        """A whole number in [minimum, maximum]: every count has a ceiling, so that no value
        (10**30 nodes) reaches a loop, a float or a rendered manifest unchecked."""
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {_kind(value)}", f"write {example}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"must be {minimum}–{maximum}, not {excerpt(value)}",
                            f"write {example}")  # fmt: skip
        return value

    def number(
        self, key: str, minimum: float, example: str, maximum: float = MAX_NUMBER
    ) -> float | None:
        """A finite number in [minimum, maximum] (nan and inf are TOML floats, and every
        comparison with nan is false)."""
        if key not in self.table:
            return None
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, not {_kind(value)}", f"write {example}")
        finite = isinstance(value, int) or math.isfinite(value)  # 10**400 is no float
        if not (finite and minimum <= value <= maximum):
            raise self.fail(key, f"must be a number from {minimum:g} to {maximum:g}, not "
                            f"{excerpt(value)}", f"write {example}")  # fmt: skip
        return float(value)

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(
                key, f"must be true or false, not {_kind(value)}", f"write {key} = true"
            )
        return value

    def strings(self, key: str, example: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if not isinstance(value, list):
            raise self.fail(
                key, f"must be a list of strings, not {_kind(value)}", f"write {example}"
            )
        for i, item in enumerate(value):
            if not isinstance(item, str) or "\x00" in item:
                problem = f"must be a string, not {_kind(item)}"
                if isinstance(item, str):
                    problem = f"{excerpt(item)} holds a NUL character"
                raise SpecError(self.file, f"{self.path(key)}[{i}]", problem, f"write {example}")
        return tuple(value)

    def tables(self, key: str, allowed: tuple[str, ...], example: str) -> list[FieldReader]:
        """A list of tables (`[[job.data]]`, `gpus = [{…}]`), a reader for each."""
        raw = self.table.get(key, [])
        if not isinstance(raw, list):
            raise self.fail(key, f"must be a list of tables, not {_kind(raw)}", f"write {example}")
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", "must be a table", f"write {example}")
            out.append(FieldReader(self.file, item, self.path(f"{key}[{i}]."), allowed))
        return out

    def table_at(self, key: str, allowed: tuple[str, ...]) -> FieldReader:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(
                key, f"must be a table, not {_kind(value)}", f"write [{key}] as a table"
            )
        return FieldReader(self.file, value, f"{self.path(key)}.", allowed)


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _targets(r: FieldReader) -> Targets:
    t = r.table_at("targets", TARGET_KEYS)
    gpus = t.strings("gpus", 'gpus = ["H100", "RTX 4090", "sm_89"]')
    for i, g in enumerate(gpus):
        if not g.strip():
            raise SpecError(r.file, t.path(f"gpus[{i}]"), "is empty", "name a GPU model or sm_XY")
    driver = t.parsed("driver", parse_driver, 'driver = "580.65.06"')
    glibc = t.parsed("glibc", parse_glibc, 'glibc = "2.31"')
    example = 'platforms = ["linux-x86_64", "linux-aarch64", "macos-arm64"]'
    platforms: list[str] = []
    for i, text in enumerate(t.strings("platforms", example)):
        try:
            name = parse_platform(text)
        except ValueError as e:
            raise SpecError(r.file, t.path(f"platforms[{i}]"), str(e), example) from None
        if name in platforms:
            raise SpecError(
                r.file, t.path(f"platforms[{i}]"), f"{name} is listed twice", "list it once"
            )
        platforms.append(name)
    return Targets(
        platforms=tuple(platforms),
        driver=t.string("driver", None, "") if driver else None,
        gpus=tuple(g.strip() for g in gpus),
        glibc=t.string("glibc", None, "") if glibc else None,
        allow_forward_compat=t.boolean("allow_forward_compat"),
        cpu=t.boolean("cpu", default=True),
    )


def _image(r: FieldReader) -> ImageOptions:
    im = r.table_at("image", IMAGE_KEYS)
    pkgs = im.strings("system_packages", 'system_packages = ["git", "libgl1"]')
    for i, p in enumerate(pkgs):
        if not _APT_RE.fullmatch(p):
            raise SpecError(
                r.file,
                im.path(f"system_packages[{i}]"),
                f"{excerpt(p)} is not a Debian package name",
                'write a name such as "libgl1" or "git=1:2.39.5-0+deb12u1"',
            )
    return ImageOptions(
        jupyter=im.boolean("jupyter"),
        ssh=im.boolean("ssh"),
        cuda_extensions=im.boolean("cuda_extensions"),
        system_packages=pkgs,
    )


def spec_from_table(table: dict[str, Any], file: str, default_name: str, prefix: str = "") -> Spec:
    """Validate a parsed torchship.toml (prefix "") or [tool.torchship] ("tool.torchship.")."""
    r = FieldReader(file, table, prefix, TOP_KEYS)
    name = r.string("name", default_name, 'name = "my-project"') or default_name
    if not NAME_RE.fullmatch(name):
        raise r.fail(
            "name",
            f"{excerpt(name)} is not a valid name",
            "use lower case letters, digits, '.', '_' and '-'",
        )
    if "torch" not in table:
        raise r.fail(
            "torch", "missing", 'add torch = "2.9.1" (a version or a range like ">=2.7,<2.10")'
        )
    r.parsed("torch", parse_torch, 'torch = "2.9.1"')
    if "python" not in table:
        raise r.fail(
            "python", "missing", 'add python = "3.12" (the image and the lock are built for it)'
        )
    python = r.parsed("python", parse_python, 'python = "3.12"')
    cuda = r.parsed("cuda", parse_cuda, 'cuda = "auto" (or "12.8", or "cpu")') or "auto"
    packages = r.strings("packages", 'packages = ["numpy>=2", "transformers"]')
    targets = _targets(r)
    if cuda == "cpu" and not targets.cpu:
        raise SpecError(
            file,
            r.path("targets.cpu"),
            "is false, but cuda = 'cpu' makes the CPU build the only environment",
            "remove targets.cpu, or set cuda to 'auto' or a CUDA version",
        )
    for i, p in enumerate(packages):
        try:
            parse_requirement(p)
        except ValueError as e:
            raise SpecError(
                file, r.path(f"packages[{i}]"), str(e), 'write e.g. "numpy>=2,<3"'
            ) from None
    return Spec(
        name=name,
        torch=str(r.string("torch", None, "")).strip(),
        python=str(python),
        cuda=cuda,
        packages=packages,
        targets=targets,
        image=_image(r),
        source=file,
        prefix=prefix,
    )


def read_toml(
    path: Path, what: str = "spec file", hint: str = "pass a project folder or its torchship.toml"
) -> dict[str, Any]:
    """The TOML table of the file `path`, read bounded (see torchship._files)."""
    return parse_toml(read_user_text(path, what, hint), str(path))


def find_spec_file(path: Path) -> Path:
    """A spec file itself, or the torchship.toml / pyproject.toml in a project folder."""
    if path.is_dir():
        for candidate in (path / SPEC_FILE, path / PYPROJECT):
            if candidate.is_file():
                if candidate.name == PYPROJECT and not _has_tool_table(candidate):
                    continue
                return candidate
        raise SpecError(
            str(path),
            "",
            f"no {SPEC_FILE} and no [tool.torchship] in {PYPROJECT}",
            "run `torchship init` there, or pass the spec file",
        )
    if not path.exists():
        raise SpecError(
            str(path), "", "does not exist", "pass a project folder or its torchship.toml"
        )
    return path


def _has_tool_table(pyproject: Path) -> bool:
    """Whether a pyproject.toml holds [tool.torchship]; one that is not UTF-8 TOML does not
    (the folder then has no spec). One that cannot be read at all (too large, unreadable) is
    that error."""
    try:
        data = read_toml(pyproject)
    except SpecError:
        return False
    return isinstance(data.get("tool"), dict) and "torchship" in data["tool"]


def load_spec(path: str | Path) -> Spec:
    """Load and validate the spec at `path` (a file or a project folder)."""
    file = find_spec_file(Path(path))
    data = read_toml(file)
    default_name = file.resolve().parent.name.lower() or "project"
    if file.name == PYPROJECT:
        project = data.get("project")
        if isinstance(project, dict) and isinstance(project.get("name"), str):
            default_name = project["name"].lower()
        tool = data.get("tool")
        table = tool.get("torchship") if isinstance(tool, dict) else None
        if not isinstance(table, dict):
            raise SpecError(
                str(file),
                "tool.torchship",
                "missing or not a table",
                "add a [tool.torchship] table",
            )
        return spec_from_table(table, str(file), safe_name(default_name), "tool.torchship.")
    return spec_from_table(data, str(file), safe_name(default_name))


def safe_name(name: str) -> str:
    """A folder or project name made fit for `name` (and image tags)."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return cleaned[:63] or "project"
