"""Image size: torchship's runtime image against a naive single-stage build of the same lock.
Target: ≤ 0.7×.

    python benchmarks/image_size.py

Both are built here by podman on the same debootstrap Debian base (registries are unreachable)
with the same locked requirements and the same local torch wheel. The naive build is the one
most guides show: one stage, pip (with its recommended build tools) from apt, `pip install -r`
without --no-cache-dir, apt lists left in place, running as root. torchship's is
`torchship image build --variant runtime` (builder stage, uv with hashes, bytecode compiled,
only the venv and tini copied onto the base). Sizes are podman's uncompressed image sizes; the
shared base is reported too. The last line is the ratio.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.podman_env import (
    BASE,
    CPU_LOCK,
    ENGINE_ARGS,
    LOCAL_TORCH_WHEELS,
    build,
    image_size,
    prepare,
    sh,
)

from torchship.lock import read_lock
from torchship.lock.model import export_requirements

TARGET = 0.7
NAIVE = f"""FROM {BASE}
RUN apt-get update && apt-get install -y python3-pip python3-venv tini ca-certificates
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,source=wheels,target=/tmp/wheels \\
    --mount=type=secret,id=ca-bundle \\
    python3 -m venv /opt/venv \\
    && PIP_CERT=/run/secrets/ca-bundle /opt/venv/bin/pip install --require-hashes --no-deps \\
       --find-links /tmp/wheels -r /tmp/requirements.txt
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /workspace
CMD ["python"]
"""


def main() -> int:
    reason = prepare()
    if reason:
        print(f"cannot measure here: {reason}")
        return 2
    lock = read_lock(CPU_LOCK / "torchship.lock")
    ours, naive = f"localhost/bench-size:ours-{lock.short_hash}", "localhost/bench-size:naive"
    build("runtime", ours)
    with tempfile.TemporaryDirectory() as d:
        ctx = Path(d)
        (ctx / "Dockerfile").write_text(NAIVE)
        (ctx / "requirements.txt").write_text(export_requirements(lock, index=False))
        shutil.copytree(LOCAL_TORCH_WHEELS, ctx / "wheels")
        ca = "/etc/ssl/certs/ca-certificates.crt"
        sh(
            "podman",
            "build",
            "--network=host",
            *ENGINE_ARGS,
            "--secret",
            f"id=ca-bundle,src={ca}",
            "--tag",
            naive,
            str(ctx),
        )
    base, o, n = image_size(BASE), image_size(ours), image_size(naive)
    mib = 1024 * 1024
    print(
        f"lock {lock.name} ({lock.short_hash}): torch {lock.torch}, {len(lock.packages)} packages"
    )
    print(f"shared base (debootstrap bookworm + python3): {base / mib:,.0f} MiB")
    print(f"naive single-stage: {n / mib:,.0f} MiB (above base {(n - base) / mib:,.0f} MiB)")
    print(f"torchship runtime:  {o / mib:,.0f} MiB (above base {(o - base) / mib:,.0f} MiB)")
    ratio = o / n
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"torchship/naive image size: {ratio:.2f}× ({verdict} the ≤ {TARGET}× target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
