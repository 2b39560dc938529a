"""Name -> factory registries (timm / lm-evaluation-harness style) for methods, models and protocols.

A registry maps a lower-case name to a factory plus free-form metadata. Unknown names raise
``UnknownNameError`` listing what is known, so a typo is fixed from the error message alone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name was asked of a registry that does not hold it."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class Registry(Generic[T]):
    """A named collection of factories.

    ``loader`` is called once, before the first lookup, to populate lazily (entry points,
    YAML files); it keeps imports cheap for ``compdd --help``.
    """

    def __init__(self, kind: str, loader: Callable[[Registry[T]], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._loader = loader
        self._loaded = loader is None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the loader registers through this same object
            assert self._loader is not None
            self._loader(self)

    def add(self, name: str, obj: T, *, replace: bool = False, **meta: Any) -> T:
        key = name.lower()
        if key in self._items and not replace and self._items[key] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[key] = obj
        self._meta[key] = meta
        return obj

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj, **meta)

        return deco

    def get(self, name: str) -> T:
        self._ensure_loaded()
        key = name.lower()
        if key not in self._items:
            raise UnknownNameError(self.kind, name, self.names())
        return self._items[key]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name.lower()])

    def names(self, pattern: str = "*") -> list[str]:
        self._ensure_loaded()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern.lower()))

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
