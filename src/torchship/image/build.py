"""Build a rendered image with whichever engine is installed: docker, podman or buildah.

`build_argv` is pure (the exact engine command, printed by --dry-run); `build` writes the
context and runs it, keeping the whole log and showing its tail when the build fails.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from torchship._atomic import write_text_atomic
from torchship.errors import TorchshipError, UsageError
from torchship.image.dockerfile import Rendered

ENGINES = ("docker", "podman", "buildah")


class BuildError(TorchshipError):
    """The engine ran and the build failed."""


def detect_engine(which: Callable[[str], str | None] = shutil.which) -> str:
    for engine in ENGINES:
        if which(engine):
            return engine
    raise UsageError(
        "no container engine found (looked for docker, podman, buildah on PATH)",
        "install one (e.g. `apt-get install podman`), or eject the Dockerfile with "
        "`torchship image render -o DIR` and build it elsewhere",
    )


def build_argv(
    engine: str, context: Path, tag: str, build_args: dict[str, str] | None = None
) -> list[str]:
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", f"one of: {', '.join(ENGINES)}")
    head = {"docker": ["docker", "build"], "podman": ["podman", "build"]}.get(
        engine, ["buildah", "build"]
    )
    argv = [*head, "--tag", tag, "--file", str(context / "Dockerfile")]
    for key, value in sorted((build_args or {}).items()):
        argv += ["--build-arg", f"{key}={value}"]
    return [*argv, str(context)]


def write_context(rendered: Rendered, context: Path) -> None:
    context.mkdir(parents=True, exist_ok=True)
    write_text_atomic(context / "Dockerfile", rendered.dockerfile)
    for name, text in rendered.files.items():
        write_text_atomic(context / name, text)


def build(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
    """Run the engine, streaming its output to `log_path`; BuildError with the tail on failure."""
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text("utf-8", errors="replace").splitlines()[-15:]
        raise BuildError(
            f"{argv[0]} build failed (exit {proc.returncode}); last lines:\n  " + "\n  ".join(tail),
            f"the whole log is {log_path}",
        )
