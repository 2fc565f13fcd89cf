"""A lock file as read, before it is checked: its TOML, and the pins of its environments.

`torchship lock` over an existing lock keeps that lock's pins (uv's preferences). Reading the
lock whole and checking every value imports the lock model and packaging's requirement parser
(~60 ms on two busy cores, issue 20), so uv starts with the pins read from the TOML alone and
the lock is checked while uv resolves; torchship.lock.lock_fleet starts uv again should the
checked lock keep other pins (an unusable one keeps none). Nothing here imports the lock model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torchship._files import parse_toml, read_user_text
from torchship.errors import LockFileError, UsageError
from torchship.spec.fields import is_package_name

__all__ = ["REGENERATE", "environment_pins", "kept_pins", "load"]

REGENERATE = "regenerate it with `torchship lock`; a lock is written by torchship, never by hand"

# pins by environment name, the primary environment first
Pins = Mapping[str, tuple[str, ...]]

# A PEP 508 name (spec.fields.is_package_name, the lock's own rule) and a version held to PEP
# 440's characters (stricter than the lock's rule), so that what reaches uv unchecked is a name
# and a version and nothing else (no option, URL, marker or line break)
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!_-]*")


def load(path: Path) -> dict[str, Any]:
    """The parsed TOML, read as every user file is (bounded; a FIFO or device is refused)."""
    try:
        text = read_user_text(path, "lock file", "run `torchship lock` first")
    except UsageError as e:
        raise LockFileError(e.message, e.hint) from None
    try:
        return parse_toml(text, str(path))
    except UsageError as e:
        raise LockFileError(e.message, REGENERATE) from None


def environment_pins(data: Mapping[str, Any]) -> Pins | None:
    """Each environment's pins but torch's (`name==version`), as the lock file holds them,
    unchecked but for their characters; None where its shape is not a lock's, or a name or
    version is more than one."""
    try:
        out = {str(data["environment"]["variant"]): _pins(data["package"])}
        for name, env in data.get("environments", {}).items():
            out.setdefault(str(name), _pins(env.get("package", ())))
    except (KeyError, TypeError, AttributeError):
        return None
    return out


def _pins(packages: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    out = []
    for p in packages:
        name, version = p["name"], p["version"]
        if not (isinstance(name, str) and is_package_name(name)) or not (
            isinstance(version, str) and _VERSION.fullmatch(version)
        ):  # never unchecked text in uv's files: a word of a name, a version
            raise TypeError(f"not a pin: {name!r} {version!r}")
        if name != "torch":
            out.append(f"{name}=={version}")
    return tuple(out)


def kept_pins(previous: Pins | None, env: str) -> tuple[str, ...] | None:
    """The previous pins an environment keeps: its own, or, for a CUDA environment whose
    build moved (cu128 → cu130), the primary's; None when there are none to keep."""
    if not previous:
        return None
    if env in previous:
        return previous[env]
    if not env.endswith("cpu"):
        return next(iter(previous.values()))
    return None
