"""What `uv pip compile` says when it fails, as one line naming the cause and one with the fix:
an index it cannot reach, a package without a wheel for the environment's platform, a set of
requirements nothing satisfies. Real stderr of uv 0.13.9 is under tests/data/uv."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torchship.compat.platforms import INFO
from torchship.errors import IndexUnreachableError, LockError

if TYPE_CHECKING:
    from torchship.lock.plan import CompilePlan

# What uv prints when an index cannot be reached (its lines, as of uv 0.13); `sync` reads them too.
UV_NET_ERRORS = (
    "Failed to fetch",
    "error sending request",
    "dns error",
    "tcp connect error",
    "Connection refused",
    "timed out",
    "client error (Connect)",
)
UV_URL_RE = re.compile(r"(https?://[^\s`'\")]+)")

# uv 0.13.9 on a package without a wheel for the target (tests/data/uv/no-wheel-*.txt):
#   "… and because triton>=2.2.0 has no wheels with a matching platform tag (e.g., `win_amd64`)"
#   "hint: Wheels are available for `triton` (v3.9.0) on the following platforms: `…`, `…`"
_NO_WHEEL_RE = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:[<>=!~]=?[^\s,]*)? has no wheels with a matching "
    r"platform tag \(e\.g\., `([^`]+)`\)"
)
_AVAILABLE_RE = re.compile(
    r"Wheels are available for `([^`]+)` \(v([^)]+)\) on the following platforms: (.+)"
)
# PEP 508 markers that leave a package out on one platform (and keep it everywhere else)
SKIP_MARKER = {
    "linux-x86_64": "platform_machine != 'x86_64'",
    "linux-aarch64": "platform_machine != 'aarch64'",
    "windows-x86_64": "sys_platform != 'win32'",
    "macos-arm64": "sys_platform != 'darwin'",
    "macos-x86_64": "sys_platform != 'darwin'",
}


def failure(plan: CompilePlan, stderr: str, torch_label: str) -> LockError:
    text = stderr.strip()
    at = f"{plan.label}: " if plan.label else ""
    if any(marker in text for marker in UV_NET_ERRORS):
        return _unreachable(plan, text, torch_label)
    first = next((ln for ln in text.splitlines() if ln.strip()), "no output")
    missing = _NO_WHEEL_RE.findall(text)
    if missing:
        return _no_wheel(plan, text, missing[-1])
    if "No solution found" in text or "unsatisfiable" in text:
        detail = " ".join(ln.strip() for ln in text.splitlines()[1:4])
        return LockError(
            f"{at}no set of packages satisfies the spec: {detail}",
            "loosen the version constraints in `packages`, or pick another torch",
        )
    return LockError(
        f"{at}uv pip compile failed: {first}", "run again with --debug to see uv's output"
    )


def _unreachable(plan: CompilePlan, text: str, torch_label: str) -> IndexUnreachableError:
    urls = UV_URL_RE.findall(text)
    url = urls[0] if urls else plan.extra_index_url or plan.index_url
    index = next(
        (
            i
            for i in (plan.extra_index_url, plan.index_url, *plan.find_links)
            if i and url.startswith(i.rstrip("/"))
        ),
        url,
    )
    cause = next((ln.strip() for ln in reversed(text.splitlines()) if "cause" in ln), "")
    if index == plan.extra_index_url:
        where = ""
        if plan.label:  # pip downloads for this machine unless told the wheel's platform
            tag = _wheel_tag(plan)
            where = f" --platform {tag} --python-version {plan.python_version} --only-binary=:all:"
        hint = (
            f"{torch_label} is only on the PyTorch index: pass --find-links DIR holding its "
            f"wheels (`pip download torch=={torch_label} --no-deps{where} --index-url {index} "
            "-d DIR` where it is reachable), or --pytorch-index URL for a mirror"
        )
    else:
        hint = "check the network or proxy (HTTPS_PROXY), or pass --pypi-index URL for a mirror"
    detail = cause.removeprefix("cause: ") or "unreachable"
    if plan.label:
        detail += f" (locking {plan.label})"
    return IndexUnreachableError(index, detail, hint)


def _wheel_tag(plan: CompilePlan) -> str:
    """The wheel platform tag `pip download --platform` wants for the plan's target."""
    info = INFO[plan.target]
    if info.os == "linux":
        return plan.platform.split("-", 1)[1] + "_" + info.machine  # manylinux_2_28_aarch64
    if info.os == "windows":
        return "win_amd64"
    return f"macosx_{(plan.macos_min or '11.0').replace('.', '_')}_{info.machine}"


def _no_wheel(plan: CompilePlan, text: str, found: tuple[str, str]) -> LockError:
    """No wheel of a package for the target platform: one line naming both, one with the fix."""
    name, tag = found
    avail = next((m for m in _AVAILABLE_RE.findall(text) if m[0] == name), None)
    where = plan.label or plan.target
    has = ""
    if avail:
        tags = [t.strip(" `") for t in avail[2].split(",")]
        shown = ", ".join(tags[:4]) + (f" and {len(tags) - 4} more" if len(tags) > 4 else "")
        has = f"; {name} {avail[1]} has wheels for {shown}"
    message = f"{where}: no wheel of {name} for {tag} (Python {plan.python_version}){has}"
    if name == "torch":
        return LockError(message, "pick a torch release with wheels there (`torchship resolve`)")
    marker = SKIP_MARKER[plan.target]
    return LockError(
        message,
        f'leave it out there with a marker in `packages` ("{name}; {marker}"), or remove '
        f"{plan.target} from [targets] platforms",
    )


def macos_floor(text: str, current: str, machine: str) -> str | None:
    """The macOS version torch's wheels need where uv found none at `current`: the lowest of
    uv's "Wheels are available for `torch` … on the following platforms" above it (torch 2.10
    has `macosx_11_0_arm64` wheels for Python 3.11 and only `macosx_14_0_arm64` ones for 3.14;
    the matrix gives one floor per release). None when that is not what failed."""
    if not any(n == "torch" and t.startswith("macosx_") for n, t in _NO_WHEEL_RE.findall(text)):
        return None
    avail = next((a for a in _AVAILABLE_RE.findall(text) if a[0] == "torch"), None)
    if avail is None:
        return None
    have = tuple(int(x) for x in current.split(".")[:2])
    tags = re.findall(rf"macosx_(\d+)_(\d+)_(?:{machine}|universal2)\b", avail[2])
    above = sorted(f for f in {(int(x), int(y)) for x, y in tags} if f > have)
    return f"{above[0][0]}.{above[0][1]}" if above else None
