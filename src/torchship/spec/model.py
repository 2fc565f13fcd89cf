"""The spec: what a project declares in torchship.toml or [tool.torchship] of pyproject.toml."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Targets:
    """The machines the environment must run on. Nothing here is ever assumed silently."""

    driver: str | None = None  # the oldest NVIDIA driver in the fleet, "580.65.06"
    gpus: tuple[str, ...] = ()  # "H100", "RTX 5090", "sm_90", "9.0"
    glibc: str | None = None  # the oldest glibc in the fleet, "2.31"
    allow_forward_compat: bool = False  # accept cuda-compat on data-center GPUs
    cpu: bool = True  # lock a `cpu` environment too, for machines without a usable GPU
    # the platforms the lock installs on ("linux-x86_64", "macos-arm64"); () = implied by the
    # GPUs (GB200 -> linux-aarch64), else linux-x86_64
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """The spec's [image] table: what the project's image holds beside the lock."""

    jupyter: bool = False
    ssh: bool = False
    cuda_extensions: bool = False  # build CUDA extensions: needs a devel base
    system_packages: tuple[str, ...] = ()  # apt packages for the runtime image


@dataclass(frozen=True, slots=True)
class Spec:
    """A project's torchship.toml (or [tool.torchship]), validated where it was read."""

    name: str
    torch: str  # a version ("2.9.1") or PEP 440 range (">=2.7,<2.10")
    python: str  # "3.12", "3.13t"
    cuda: str = "auto"  # "auto" | "cpu" | "12.8"
    packages: tuple[str, ...] = ()  # PEP 508 requirements
    targets: Targets = field(default_factory=Targets)
    image: ImageOptions = field(default_factory=ImageOptions)
    source: str = ""  # the file it came from; not part of the spec's identity
    prefix: str = ""  # "tool.torchship." when it came from pyproject.toml

    def where(self, field_path: str) -> str:
        """The field path as the user wrote it, for error messages."""
        return self.prefix + field_path

    def to_dict(self) -> dict[str, Any]:
        """The canonical content: what the spec hash covers and the lock records."""
        return {
            "name": self.name,
            "torch": self.torch,
            "cuda": self.cuda,
            "python": self.python,
            "packages": list(self.packages),
            "targets": {
                "driver": self.targets.driver,
                "gpus": list(self.targets.gpus),
                "glibc": self.targets.glibc,
                "allow_forward_compat": self.targets.allow_forward_compat,
                # the default (a cpu environment) is left out, so that specs written before
                # the field existed keep their hash
                **({} if self.targets.cpu else {"cpu": False}),
                **({"platforms": list(self.targets.platforms)} if self.targets.platforms else {}),
            },
            "image": {
                "jupyter": self.image.jupyter,
                "ssh": self.image.ssh,
                "cuda_extensions": self.image.cuda_extensions,
                "system_packages": list(self.image.system_packages),
            },
        }

    @property
    def spec_hash(self) -> str:
        return content_hash(self.to_dict())


def content_hash(data: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace): stable across formatting."""
    import hashlib  # loads OpenSSL: not before `torchship lock` has started uv (issue 20)

    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
