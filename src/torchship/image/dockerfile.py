"""Render a multi-stage Dockerfile and its build context from a lock. Pure: no I/O, no clients.

    render(lock, RenderOptions(variant="runtime")) -> Rendered(dockerfile, files)

builder stage: uv installs the locked requirements with their hashes into /opt/venv (with a
uv-managed Python in /opt/python when the base has none). Final stage: the smallest base the
lock allows (`nvidia/cuda:*-base`, whose CUDA libraries the torch wheels bring themselves, or
`python:*-slim` for a CPU lock), the environment copied in read-only (root-owned), tini as PID 1,
a non-root user, NVIDIA_* variables from the lock, OCI labels with the lock hash, /workspace.

An image installs one environment of the lock: the primary one by default, or another Linux one
(`RenderOptions.env`, e.g. `linux-aarch64-cu130`). An environment of another CPU than x86_64 —
or any environment of a lock spanning several Linux platforms — pins every stage to its
platform (`FROM --platform=linux/arm64 …`) and the build command passes `--platform`
(`Rendered.platform`); Windows and macOS environments have no container image and are refused.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from torchship._version import __version__
from torchship.compat.platforms import INFO, LINUX_X86_64
from torchship.errors import UsageError, excerpt
from torchship.image.agent import AGENT_CONTEXT, AGENT_DIR, agent_files
from torchship.lock.model import (
    LOCK_FILE,
    Lock,
    LockEnvironment,
    export_requirements,
    lock_environment,
)
from torchship.lock.validate import (
    check_fields,
    image_ref,
    index_url,
    is_pytorch_index,
    locked_spec,
    text,
)
from torchship.spec.model import Spec

VARIANTS = ("runtime", "jupyter", "ssh", "devel")
# uv's own image, pinned by version (docs.astral.sh/uv/guides/integration/docker).
UV_IMAGE = "ghcr.io/astral-sh/uv:0.9.5"
LOCK_IN_IMAGE = "/etc/torchship/torchship.lock"  # doctor reads it via $TORCHSHIP_LOCK
JUPYTER_PORT = 8888
SSH_PORT = 2222  # unprivileged: sshd runs as the non-root user
_CA = "if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi"
_CUDA_TAG = re.compile(r"^nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-")


@dataclass(frozen=True, slots=True)
class RenderOptions:
    variant: str = "runtime"
    base_image: str | None = None  # None: the lock's; e.g. a local image where no registry is
    python: str | None = (
        None  # the base's interpreter; None: the base's python (python:*), else uv's
    )
    uv_image: str = UV_IMAGE
    extra_labels: dict[str, str] = field(default_factory=dict)
    agent: bool = True  # torchship itself in /opt/torchship (doctor, workload), off the venv
    find_links: str | None = None  # a context folder of wheels uv may take (hashes still checked)
    pytorch_index: str | None = None  # a mirror of the lock's PyTorch index; "" = none (wheels)
    env: str | None = None  # the lock environment to install; None: the primary one


@dataclass(frozen=True, slots=True)
class Rendered:
    dockerfile: str
    files: dict[str, str]  # context files: name -> content
    tag: str
    agent_files: dict[str, str] = field(default_factory=dict)  # torchship-agent/…, see agent.py
    platform: str | None = None  # what the build must pass as --platform ("linux/arm64")


def image_tag(
    lock: Lock, variant: str = "runtime", name: str | None = None, env: str | None = None
) -> str:
    """`<name>:<torch>-<cuda variant>-py<X.Y>-<lockhash8>` for the runtime image, with
    `-<variant>` after it for the others; never `latest`. An environment of the lock other than
    the primary one (`env`) adds its CPU when it is not x86_64 (`-aarch64`), and `-cpu` for
    the primary platform's cpu one is its build."""
    e = lock.primary if env is None else lock_environment(lock, env)
    torch = e.torch.split("+", 1)[0]
    suffix = "" if variant == "runtime" else f"-{variant}"
    machine = INFO[e.platform_name].machine if e.platform_name in INFO else ""
    arch = "" if machine in ("", "x86_64") else f"-{machine}"
    return f"{name or lock.name}:{torch}-{e.variant}-py{e.python}-{lock.short_hash}{arch}{suffix}"


# Docker's names of the CPUs (OCI image index `platform.architecture`).
DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True, slots=True)
class _Source:
    """What an image installs: one Linux environment of the lock and its base."""

    env: LockEnvironment
    base: str  # its base image as the lock has it (tag; the digest is added by render)
    platform: str | None  # FROM --platform / build --platform, "linux/arm64"; None: the host's


def _source(lock: Lock, name: str | None) -> _Source:
    """The environment to build an image of, or a UsageError saying why none can be."""
    env = lock.primary if name is None else lock_environment(lock, name)
    info = INFO.get(env.platform_name)
    if info is None or info.os != "linux":
        linux = [e.name for e in lock.all_environments() if e.platform_name.startswith("linux")]
        fix = (
            f"build one of its Linux environments (--env {linux[0]}), or run this one with "
            "`torchship sync` on such a machine"
            if linux
            else "add linux-x86_64 (or linux-aarch64) to [targets] platforms and re-lock; "
            "`torchship sync` makes this environment on such a machine"
        )
        raise UsageError(
            f"environment {env.name} of {lock.name} is for {env.platform_name}: container "
            "images are Linux only (no Windows or macOS base image runs torch's wheels)",
            fix,
        )
    primary = env.name == lock.primary.name
    base = lock.base_image if primary else (env.base_image or "")
    if not base:
        raise UsageError(
            f"environment {env.name} of {lock.name} has no base image in the lock",
            "re-lock with this torchship (`torchship lock`): it records one per Linux platform",
        )
    linux_platforms = [p for p in lock.platforms() if INFO[p].os == "linux"]
    pinned = env.platform_name != LINUX_X86_64 or len(linux_platforms) > 1
    return _Source(env, base, f"linux/{DOCKER_ARCH[info.machine]}" if pinned else None)


def _base_python(lock: Lock, opts: RenderOptions, base: str) -> str | None:
    """The interpreter the base image already has, or None when uv must provide one."""
    if opts.python:
        return opts.python
    if base.startswith("python:") and base.split(":", 1)[1].startswith(lock.python + "-"):
        return f"/usr/local/bin/python{lock.python}"
    return None


def _require_cuda(base: str) -> str | None:
    m = _CUDA_TAG.match(base)
    return f"cuda>={m.group(1)}.{m.group(2)}" if m else None


def _labels(
    lock: Lock, opts: RenderOptions, base: str, tag: str, env: LockEnvironment
) -> dict[str, str]:
    spec = json.dumps(lock.spec, sort_keys=True, separators=(",", ":"))
    other = env.name != lock.primary.name  # the primary environment's labels are as they were
    return {
        "org.opencontainers.image.title": lock.name,
        "org.opencontainers.image.version": tag.split(":", 1)[1],
        "org.opencontainers.image.description": f"torch {env.torch} for Python {env.python}",
        "org.opencontainers.image.base.name": base.split("@", 1)[0],
        **({"org.opencontainers.image.base.digest": base.split("@", 1)[1]} if "@" in base else {}),
        "io.torchship.lock-hash": lock.content_hash,
        "io.torchship.variant": opts.variant,
        **({"io.torchship.environment": env.name} if other else {}),
        "io.torchship.torch": env.torch,
        "io.torchship.spec": spec,
        **({"io.torchship.agent": __version__} if opts.agent else {}),
        **opts.extra_labels,
    }


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def q(word: str) -> str:
    """One word of a RUN line's shell: values are validated first and quoted all the same
    (a safe word such as `tini` or `https://pypi.org/simple` is written as it is)."""
    return shlex.quote(word)


_LABEL_KEY = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")  # OCI annotation keys: reverse DNS
_CONTEXT_DIR = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")  # never `,` or `=` (--mount)
_INTERPRETER = re.compile(r"[A-Za-z0-9._+/][A-Za-z0-9._+/-]*")  # a path or a name, no option


def _check_options(opts: RenderOptions) -> None:
    """The options that reach FROM and RUN lines hold one word of their kind each."""
    image = "an image reference: [registry/]name[:tag][@sha256:…]"
    checks: list[tuple[str, str | None, Callable[[str], object], str]] = [
        ("--base-image", opts.base_image, image_ref, image),
        ("--uv-image", opts.uv_image, image_ref, image),
        ("--pytorch-index", opts.pytorch_index or None, index_url, "an http(s) URL"),
        ("--python", opts.python, _interpreter, "the interpreter's path or name"),
        ("--find-links", opts.find_links, _context_dir, "a folder of the build context"),
    ]
    for key, label in opts.extra_labels.items():
        checks.append(("label", key, _label_key, "a label key such as org.example.team"))
        checks.append((f"label {key}", label, text, "a value of one line"))
    for flag, value, check, want in checks:
        if value is None:
            continue
        try:
            check(value)
        except ValueError as e:
            raise UsageError(f"image option {flag}: {e}", f"pass {want}") from None


def _interpreter(value: str) -> None:
    _match(_INTERPRETER, value, "an interpreter's path or name")


def _context_dir(value: str) -> None:
    _match(_CONTEXT_DIR, value, "a relative folder")


def _label_key(value: str) -> None:
    _match(_LABEL_KEY, value, "a label key")


def _match(pattern: re.Pattern[str], value: str, kind: str) -> None:
    if ".." in value.split("/") or not pattern.fullmatch(value):
        raise ValueError(f"{excerpt(value)} is not {kind}")


def render(lock: Lock, opts: RenderOptions | None = None) -> Rendered:
    opts = opts or RenderOptions()
    if opts.variant not in VARIANTS:
        raise UsageError(
            f"unknown image variant {opts.variant!r}", f"one of: {', '.join(VARIANTS)}"
        )
    # Validated before anything is written, whether the lock was read or made in memory:
    # its values go into FROM and RUN lines (which quote them as well).
    check_fields(lock, LOCK_FILE)
    spec = locked_spec(lock, LOCK_FILE)
    _check_options(opts)
    src = _source(lock, opts.env)
    env = src.env
    if opts.variant == "devel" and not spec.image.cuda_extensions:
        raise UsageError(
            "the devel variant is for building CUDA extensions, and the spec does not ask for it",
            "set [image] cuda_extensions = true in torchship.toml and re-lock",
        )
    if opts.variant == "jupyter" and not any(p.name == "jupyterlab" for p in env.packages):
        raise UsageError(
            f"{lock.name}'s lock has no jupyterlab, so the jupyter variant cannot be built from it",
            "set [image] jupyter = true in torchship.toml and run `torchship lock`",
        )
    base = opts.base_image or src.base
    if opts.variant == "devel" and base.startswith("nvidia/cuda:"):
        base = base.replace("-base-", "-devel-")
    elif lock.base_digest and not opts.base_image and src.base == lock.base_image:
        # the digest pins the tag's content; `pin-base` records the one a pull by tag gives,
        # the multi-arch index's, so it pins the same tag on every CPU
        base = f"{base}@{lock.base_digest}"
    tag = image_tag(lock, opts.variant, env=None if opts.env is None else env.name)
    python = _base_python(lock, opts, base)
    files = {
        "requirements.txt": export_requirements(lock, index=False, env=opts.env),
        "torchship.lock": lock.to_toml(),
    }
    parts = [
        _header(lock, opts, src),
        _builder(env, opts, python, _from(src, base)),
        _final(lock, spec, opts, base, python, tag, src),
    ]
    if opts.variant == "jupyter":
        files["jupyter_server_config.py"] = JUPYTER_CONFIG
        files["healthcheck.py"] = HEALTHCHECK
        files["overrides.json"] = JUPYTER_OVERRIDES
    if opts.variant == "ssh":
        files["sshd_config"] = SSHD_CONFIG
        files["ssh-start.sh"] = SSH_START
    agent = agent_files() if opts.agent else {}
    return Rendered("\n".join(parts), files, tag, agent, src.platform)


def _from(src: _Source, image: str) -> str:
    """A FROM line's image, pinned to the environment's platform where it must be: every stage
    runs that CPU's binaries (uv, Python, the wheels), whatever the build host's CPU."""
    if src.platform is None:
        return image
    return f"--platform={src.platform} {image}"


def _pinned_note(src: _Source) -> str:
    if src.platform is None:
        return ""
    return (
        f"# The environment is for {src.platform}: each stage is pinned to it, and a host of\n"
        "# another CPU builds it through QEMU (binfmt_misc), as `docker buildx` does.\n"
        "# hadolint ignore=DL3029\n"
    )


def _header(lock: Lock, opts: RenderOptions, src: _Source) -> str:
    again = f"torchship image render --variant {opts.variant}"
    again += "" if opts.env is None else f" --env {src.env.name}"
    return f"""# syntax=docker/dockerfile:1
# Rendered by torchship {__version__} from {lock.name}'s torchship.lock ({lock.content_hash}),
# variant {opts.variant}. Re-render, don't edit: `{again}`.
ARG SOURCE_DATE_EPOCH=0

{_pinned_note(src)}FROM {_from(src, opts.uv_image)} AS uv
"""


def _builder(env: LockEnvironment, opts: RenderOptions, python: str | None, base: str) -> str:
    url = env.index_url if opts.pytorch_index is None else opts.pytorch_index
    pypi = not is_pytorch_index(env.index_url)  # by its host: the lock's torch is PyPI's
    index = f" --index-url {q(url)}" if pypi and url else ""
    extra = f" --extra-index-url {q(url)}" if url and not pypi else ""
    if python:
        interpreter = f"uv venv /opt/venv --python {q(python)}"
    else:
        py = q(env.python)
        interpreter = f"uv python install {py} && uv venv /opt/venv --python {py}"
    pth_file = f"/opt/venv/lib/python{env.python}/site-packages/zz_torchship_agent.pth"
    pin = "# hadolint ignore=DL3029\n" if base.startswith("--platform") else ""
    pth = f" \\\n    && echo {q(AGENT_DIR + '/lib')} > {q(pth_file)}" if opts.agent else ""
    agent = _agent_bytecode() if opts.agent else ""
    wheels = ""
    if opts.find_links:
        wheels = f"    --mount=type=bind,source={opts.find_links},target=/tmp/wheels \\\n"
        extra += " --find-links /tmp/wheels"
    return f"""# builder: the locked environment, each package checked against its lock sha256.
# A CA bundle for a TLS-intercepting proxy comes in as a build secret (`--secret
# id=ca-bundle,src=FILE`), never as a layer.
{pin}FROM {base} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \\
    UV_COMPILE_BYTECODE=1 \\
    UV_LINK_MODE=copy \\
    UV_PYTHON_DOWNLOADS=automatic
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/uv \\
    --mount=type=secret,id=ca-bundle \\
{wheels}    {_CA} \\
    && {interpreter} \\
    && uv pip install --python /opt/venv/bin/python --require-hashes --no-deps{index}{extra} \\
       -r /tmp/requirements.txt{pth}
{agent}"""


def _agent_bytecode() -> str:
    """The agent's bytecode, compiled in the builder as uv compiles the venv's
    (UV_COMPILE_BYTECODE): the container runs as a non-root user, on a read-only root under
    Kubernetes and `torchship run`, so Python cannot write it at run time and would compile the
    agent (torchship, packaging, ...) from source at every start. Hash-checked, not by mtime:
    right whatever times COPY or SOURCE_DATE_EPOCH give the files."""
    lib = q(AGENT_DIR + "/lib")
    return (
        f"COPY {AGENT_CONTEXT}/lib {lib}\n"
        f"RUN /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode checked-hash {lib}\n"
    )


def _final(
    lock: Lock,
    spec: Spec,
    opts: RenderOptions,
    base: str,
    python: str | None,
    tag: str,
    src: _Source,
) -> str:
    labels = " \\\n      ".join(
        f"{k}={_quote(v)}" for k, v in _labels(lock, opts, base, tag, src.env).items()
    )
    path = f"/opt/venv/bin:{AGENT_DIR}/bin:$PATH" if opts.agent else "/opt/venv/bin:$PATH"
    env = [
        f"PATH={path}",
        f"TORCHSHIP_LOCK={LOCK_IN_IMAGE}",
        "PYTHONUNBUFFERED=1",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
    ]
    require = _require_cuda(base)
    if src.env.variant != "cpu":
        # the container toolkit refuses an old driver before torch fails on it
        env += [
            f'NVIDIA_REQUIRE_CUDA="{require}"' if require else "",
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        ]
    env_text = " \\\n    ".join(e for e in env if e)
    apt = ["tini", "ca-certificates", *(["openssh-server"] if opts.variant == "ssh" else [])]
    apt += spec.image.system_packages
    apt_words = " ".join(q(p) for p in sorted(set(apt)))
    copy_python = "" if python else "COPY --from=builder /opt/python /opt/python\n"
    if opts.agent:
        copy_python += (
            f"COPY --from=builder {AGENT_DIR}/lib {AGENT_DIR}/lib\n"
            f"COPY --chmod=0755 {AGENT_CONTEXT}/bin/torchship {AGENT_DIR}/bin/torchship\n"
        )
    pin = "# hadolint ignore=DL3029\n" if src.platform else ""
    return f"""# final: the smallest base that runs the lock, non-root, tini as PID 1
{pin}FROM {_from(src, base)}
ARG UID=1000
ARG GID=1000
LABEL {labels}
ENV {env_text}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Apt packages are not pinned by version: Debian and Ubuntu archives drop superseded versions,
# so pins break rebuilds; the base image itself is pinned by tag (and digest when locked).
# hadolint ignore=DL3008
RUN apt-get update \\
    && apt-get install -y --no-install-recommends {apt_words} \\
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \\
    && if getent passwd "${{UID}}" >/dev/null; then userdel --remove \\
       "$(getent passwd "${{UID}}" | cut -d: -f1)"; fi \\
    && (getent group "${{GID}}" >/dev/null || groupadd --gid "${{GID}}" torchship) \\
    && useradd --no-log-init --create-home --uid "${{UID}}" --gid "${{GID}}" \\
       --shell /bin/bash torchship \\
    && install -d -o "${{UID}}" -g "${{GID}}" /workspace
COPY torchship.lock {LOCK_IN_IMAGE}
{copy_python}COPY --from=builder /opt/venv /opt/venv
{_variant_tail(opts.variant)}"""


def _variant_tail(variant: str) -> str:
    if variant == "jupyter":
        return f"""COPY jupyter_server_config.py healthcheck.py /etc/jupyter/
COPY overrides.json /opt/venv/share/jupyter/lab/settings/overrides.json
WORKDIR /workspace
USER ${{UID}}:${{GID}}
EXPOSE {JUPYTER_PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \\
    CMD ["python", "/etc/jupyter/healthcheck.py"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["jupyter", "lab", "--config=/etc/jupyter/jupyter_server_config.py"]
"""
    if variant == "ssh":
        return f"""COPY sshd_config /etc/ssh/torchship_sshd_config
COPY --chmod=0755 ssh-start.sh /usr/local/bin/torchship-ssh-start
WORKDIR /workspace
USER ${{UID}}:${{GID}}
EXPOSE {SSH_PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \\
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', {SSH_PORT}), 4)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/usr/local/bin/torchship-ssh-start"]
"""
    return """WORKDIR /workspace
USER ${UID}:${GID}
# A batch job has no service to probe: its health is its exit code, which the site reads.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python"]
"""


# Jupyter: a token is required (from JUPYTER_TOKEN, which `torchship jupyter` generates and
# prints once); never an empty token or password-less access.
JUPYTER_CONFIG = f"""# Rendered by torchship. The token comes from $JUPYTER_TOKEN; without one, the
# server generates a random token and prints it: access is never open.
c = get_config()  # noqa: F821
c.ServerApp.ip = "0.0.0.0"  # inside the container; publish it to 127.0.0.1 on the host
c.ServerApp.port = {JUPYTER_PORT}
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/workspace"
c.IdentityProvider.token = __import__("os").environ.get("JUPYTER_TOKEN") or None
c.ServerApp.allow_remote_access = True
c.ServerApp.allow_root = False
# Every endpoint needs the token except those Jupyter marks public (/api: the version only;
# the login page).
c.ServerApp.allow_unauthenticated_access = False
"""

# JupyterLab fetches news and update checks from the internet at start; off (air-gapped sites).
JUPYTER_OVERRIDES = """{
  "@jupyterlab/apputils-extension:notification": {
    "checkForUpdates": false,
    "fetchNews": "false"
  }
}
"""

# sshd for the non-root user: keys only, no root, no passwords, host keys in the user's home.
SSHD_CONFIG = f"""# Rendered by torchship: key-only sshd running as the non-root user.
Port {SSH_PORT}
HostKey /tmp/torchship-ssh/ssh_host_ed25519_key
AuthorizedKeysFile .ssh/authorized_keys
PidFile /tmp/sshd.pid
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
X11Forwarding no
AllowTcpForwarding local
"""

# Healthy when the server answers HTTP at all: /api is 200 with the token, 403 without it.
HEALTHCHECK = f"""import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen("http://127.0.0.1:{JUPYTER_PORT}/api", timeout=4)
except urllib.error.HTTPError as e:
    sys.exit(e.code >= 500)
except OSError:
    sys.exit(1)
"""

# The host key is made when the container starts, so no image layer holds a private key.
SSH_START = """#!/bin/sh
# Rendered by torchship: key-only sshd as the non-root user. Mount your public key at
# ~/.ssh/authorized_keys (read-only); the host key is generated per container, never baked in.
set -eu
mkdir -p /tmp/torchship-ssh && chmod 700 /tmp/torchship-ssh
[ -f /tmp/torchship-ssh/ssh_host_ed25519_key ] || \\
  ssh-keygen -q -t ed25519 -N '' -f /tmp/torchship-ssh/ssh_host_ed25519_key
exec /usr/sbin/sshd -D -e -f /etc/ssh/torchship_sshd_config
"""
