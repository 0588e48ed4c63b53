"""One small registry used for models, datasets, criteria, decompositions and quantizers (timm-style)."""
from __future__ import annotations

import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from torchslim.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; `register` is a decorator, `get` fails with the list of known names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries and not overwrite:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
            ) from None

    def canonical(self, name: str) -> str:
        """The first name the entry of `name` was registered under: an alias resolves to it."""
        entry = self.get(name)
        return next(n for n, e in self._entries.items() if e is entry)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
