"""Names of a package that load when first used (PEP 562), so that importing the package, or
any module inside it, costs nothing until one of them is asked for (issue 20: every command
pays its imports at start)."""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`torchship --version`)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_names(
    namespace: dict[str, Any], where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's `__getattr__` and `__dir__`: each name in `where` is read from its module
    when first asked for, then kept in the package's namespace (later lookups are plain
    attribute reads); `dir()` lists `__all__`. `namespace` is the package's globals()."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # the public names, loaded or not
        return sorted({*namespace.get("__all__", ()), *where})

    return __getattr__, __dir__
