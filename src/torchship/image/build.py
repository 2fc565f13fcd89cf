"""Build a rendered image with whichever engine is installed: docker, podman or buildah.

`build_argv` is pure (the exact engine command, printed by --dry-run); `build` writes the
context and runs it, keeping the whole log and showing its tail when the build fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torchship._atomic import write_text_atomic
from torchship.errors import TorchshipError, UsageError
from torchship.image.dockerfile import Rendered

ENGINES = ("docker", "podman", "buildah")


Runner = Callable[..., subprocess.CompletedProcess[str]]
# a new build step in docker (BuildKit: "#7 [builder 3/5] RUN …"), podman or buildah ("STEP 3/5:")
_STEP = re.compile(r"STEP \d+/\d+|^#\d+ \[[^\]]+\d+/\d+\]")


class BuildError(TorchshipError):
    """The engine ran and the build failed."""


def engine_works(engine: str, runner: Runner = subprocess.run) -> bool:
    """docker needs its daemon (the client alone is common); podman and buildah need none."""
    if engine != "docker":
        return True
    try:
        proc = runner(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def detect_engine(
    which: Callable[[str], str | None] = shutil.which,
    works: Callable[[str], bool] = engine_works,
    engines: Sequence[str] = ENGINES,
) -> str:
    """The first engine installed whose daemon (if it has one) answers."""
    installed = [e for e in engines if which(e)]
    for engine in installed:
        if works(engine):
            return engine
    if installed:
        raise UsageError(
            f"{', '.join(installed)} installed, but the docker daemon does not answer",
            "start it (`systemctl start docker`), or install podman (daemonless)",
        )
    raise UsageError(
        f"no container engine found (looked for {', '.join(engines)} on PATH)",
        "install one (e.g. `apt-get install podman`), or eject the Dockerfile with "
        "`torchship image render -o DIR` and build it elsewhere",
    )


def build_argv(
    engine: str,
    context: Path,
    tag: str,
    build_args: dict[str, str] | None = None,
    secrets: dict[str, Path] | None = None,
    extra: Sequence[str] = (),
    platform: str | None = None,
) -> list[str]:
    """The engine's build command. `secrets` (id -> file) reach RUN steps only, never a layer;
    `extra` is passed as is (e.g. `--network host`, `--runtime runc`); `platform` is the
    rendered image's (`linux/arm64`: docker, podman and buildah all take `--platform`)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", f"one of: {', '.join(ENGINES)}")
    argv = [engine, "build", "--tag", tag, "--file", str(context / "Dockerfile")]
    if platform is not None:
        argv += ["--platform", platform]
    for key, value in sorted((build_args or {}).items()):
        argv += ["--build-arg", f"{key}={value}"]
    for key, path in sorted((secrets or {}).items()):
        argv += ["--secret", f"id={key},src={path}"]
    return [*argv, *extra, str(context)]


def default_ca_bundle(environ: Mapping[str, str]) -> Path | None:
    """The CA bundle the host trusts (SSL_CERT_FILE), for builds behind a TLS-intercepting proxy."""
    value = environ.get("SSL_CERT_FILE")
    return Path(value) if value and Path(value).is_file() else None


def write_context(rendered: Rendered, context: Path, wheels: str | Path | None = None) -> None:
    """Dockerfile, context files, the agent and (with `wheels`) that folder's *.whl in wheels/."""
    context.mkdir(parents=True, exist_ok=True)
    if wheels is not None:
        found = sorted(Path(wheels).glob("*.whl"))
        if not found:
            raise UsageError(f"--find-links {wheels}: no .whl files there", "give a wheel folder")
        (context / "wheels").mkdir(exist_ok=True)
        for whl in found:
            shutil.copyfile(whl, context / "wheels" / whl.name)
    write_text_atomic(context / "Dockerfile", rendered.dockerfile)
    for name, text in {**rendered.files, **rendered.agent_files}.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(context / name, text)


def build(
    argv: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    progress: Callable[[str], object] | None = None,
) -> None:
    """Run the engine, its output into `log_path` and, line by line, to `progress` (the
    step lines, e.g. `STEP 5/9: RUN …`, so a long build shows where it is); BuildError with
    the tail on failure."""
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if progress is not None and _STEP.search(line):
                progress(line.rstrip()[:160])
        proc.wait()
    if proc.returncode != 0:
        tail = log_path.read_text("utf-8", errors="replace").splitlines()[-15:]
        raise BuildError(
            f"{argv[0]} build failed (exit {proc.returncode}); last lines:\n  " + "\n  ".join(tail),
            f"the whole log is {log_path}",
        )


def base_digest(
    engine: str,
    image: str,
    runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> str:
    """The registry digest of `image` as pulled by `engine` (from its RepoDigests)."""
    argv = [engine, "image", "inspect", "--format", "{{json .RepoDigests}}", image]
    proc = runner(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(
            f"{engine} does not have {image} ({why})",
            f"pull it first (`{engine} pull {image}`), or pass --digest sha256:…",
        )
    try:
        digests = json.loads(proc.stdout or "null") or []
    except json.JSONDecodeError:
        digests = []
    repo = image.rsplit(":", 1)[0]
    for entry in digests:
        name, _, digest = str(entry).partition("@")
        if digest.startswith("sha256:") and (name == repo or name.endswith("/" + repo)):
            return digest
    raise UsageError(
        f"{engine} has {image} but no registry digest for it (built locally?)",
        "pull it from its registry, or pass --digest sha256:…",
    )
