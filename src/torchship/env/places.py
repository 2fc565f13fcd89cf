"""Where environments live and what a command run in one sees: the small part of sync.py that
`torchship exec --local` needs when it starts from its memo (memo.py), without sync.py's
imports (the lock model, uv's driver, the matrix)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

MARKER = "torchship-env.json"
AGENT_VAR = "TORCHSHIP_AGENT_PATH"
AGENT_MODULES = ("torchship", "packaging", "platformdirs", "tomli_w", "prometheus_client")
# Variables of the outer Python that would put other packages before the locked ones.
DROPPED = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$TORCHSHIP_CACHE_DIR when set, else the user's cache dir (platformdirs)."""
    env = os.environ if environ is None else environ
    if env.get("TORCHSHIP_CACHE_DIR"):
        return Path(env["TORCHSHIP_CACHE_DIR"])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("torchship", appauthor=False))


def envs_dir(environ: Mapping[str, str] | None = None) -> Path:
    return cache_dir(environ) / "envs"


def installed(venv: Path) -> dict[str, str]:
    """The distributions in a venv, from their dist-info folder names (no import, one
    listdir): normalised name → version."""
    site = next((venv / "lib").glob("python3*/site-packages"), None)
    out: dict[str, str] = {}
    for entry in sorted(site.iterdir()) if site else []:
        if entry.name.endswith(".dist-info") and "-" in entry.name:
            name, version = entry.name.removesuffix(".dist-info").split("-", 1)
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def holds_exactly(venv: Path, packages: Mapping[str, str]) -> bool:
    """Whether the environment at `venv` is finished (its marker, its interpreter) and holds
    exactly these distributions (name → version): one installed into it by hand since is a
    difference."""
    if not (venv / MARKER).is_file() or not (venv / "bin" / "python").exists():
        return False
    return installed(venv) == dict(packages)


def run_environ(venv: Path, agent: Path | None, base: Mapping[str, str]) -> dict[str, str]:
    """The process environment of a command run inside the environment at `venv`: VIRTUAL_ENV
    and PATH point at it, and nothing of the outer Python's (PYTHONPATH, PYTHONHOME…) reaches
    it; `agent`, when given, is the folder its .pth file puts on sys.path."""
    env = {k: v for k, v in base.items() if k not in (*DROPPED, AGENT_VAR)}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{base.get('PATH', os.defpath)}"
    if agent is not None:
        env[AGENT_VAR] = str(agent)
    return env
