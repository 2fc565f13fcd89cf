"""The project spec: types and loading. The names load when first used (PEP 562): a lock file
needs the spec's types, not its parser."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchship.spec.load import load_spec
    from torchship.spec.model import ImageOptions, Spec, Targets

_WHERE = {
    "ImageOptions": "torchship.spec.model",
    "Spec": "torchship.spec.model",
    "Targets": "torchship.spec.model",
    "load_spec": "torchship.spec.load",
}

__all__ = ["ImageOptions", "Spec", "Targets", "load_spec"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'torchship.spec' has no attribute {name!r}")
