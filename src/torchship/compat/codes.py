"""The resolver's stable rejection codes, documented in docs/resolver.md: never rename one.
A rejected build carries the first failure's code, as `torchship resolve` prints it and its
JSON gives it to scripts. Also the index of NVIDIA's Jetson builds, which a rejection names."""

from __future__ import annotations

VARIANT_NOT_BUILT = "variant-not-built"
VARIANT_UNVERIFIED = "variant-unverified"
PYTHON_UNAVAILABLE = "python-unavailable"
GLIBC_TOO_OLD = "glibc-too-old"
DOMAIN_LIBRARY_UNAVAILABLE = "domain-library-unavailable"
EXTENSION_UNPAIRED = "extension-unpaired"
ARCH_UNSUPPORTED = "arch-unsupported"
ARCH_UNVERIFIED = "arch-unverified"
DRIVER_TOO_OLD = "driver-too-old"
FORWARD_COMPAT_ONLY = "forward-compat-only"
DRIVER_TOO_OLD_FOR_PTX = "driver-too-old-for-ptx"
PLATFORM_UNAVAILABLE = "platform-unavailable"
DRIVER_TOO_NEW = "driver-too-new"

JETSON_INDEX = "https://pypi.jetson-ai-lab.io"  # NVIDIA's Jetson builds (platforms.md §4)
