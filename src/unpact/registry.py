"""A typed name → object registry, so that adding an attribution method, a benchmark metric or an attack is
one new file: the file registers its object under a name at import, and every user of the registry (the
dispatching function, the CLI's checks, the lists of names in error messages) sees it.

In the spirit of lm-evaluation-harness's registries: an unknown name is a one-line `UnpactError` that
names what exists (and the closest spelling). Modules register themselves when imported; a registry built
with ``discover`` imports them the first time its contents are read (`import_submodules`), so no
``__init__`` has to list them and importing a package stays as cheap as before.

This module imports nothing from unpact but `unpact.errors`, so any subpackage can build on it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

from .errors import UnpactError, did_you_mean

T = TypeVar("T")
D = TypeVar("D")
_MISSING: Any = object()


class Registry(Mapping[str, T]):
    """Named objects of one kind, in registration order.

    A read-only `Mapping` of name → object (``name in r``, ``list(r)``, ``r[name]``, ``len(r)``), so it
    can stand where a ``{name: object}`` dict or a tuple of names stood. ``kind`` ("attribution method")
    goes into error messages; ``discover`` is called once, before the contents are first read, to import
    the modules that register (`import_submodules`); ``casefold`` makes lookups case-insensitive.
    """

    def __init__(self, kind: str, *, discover: Callable[[], object] | None = None, casefold: bool = False) -> None:
        self.kind = kind
        self._discover = discover
        self._casefold = casefold
        self._objects: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._keys: dict[str, str] = {}  # lookup key → registered spelling

    def _key(self, name: str) -> str:
        return name.casefold() if self._casefold else name

    def _discovered(self) -> dict[str, T]:
        if self._discover is not None:
            discover, self._discover = self._discover, None  # before the call: the imports register into self
            try:
                discover()
            except BaseException:
                self._discover = discover  # a failed import fails again next time instead of leaving gaps
                raise
        return self._objects

    def add(self, name: str, obj: T, *, help: str = "") -> T:
        """Register ``obj`` under ``name`` with a one-line ``help``; returns ``obj``.

        A name taken already is an error (two modules claiming one name would otherwise depend on import order).
        """
        if not isinstance(name, str) or not name or name != name.strip():
            raise UnpactError(f"{self.kind} name {name!r}: use a non-empty name without surrounding spaces")
        if "\n" in help:
            raise UnpactError(f"{self.kind} {name!r}: help must be one line")
        key = self._key(name)
        if key in self._keys:
            raise UnpactError(f"{self.kind} {name!r} is registered already; pick another name or remove() it first")
        self._keys[key], self._objects[name], self._help[name] = name, obj, help
        return obj

    def register(self, name: str, *, help: str = "") -> Callable[[D], D]:
        """Decorator: ``@registry.register("name", help="...")`` registers the decorated object as is."""

        def decorate(obj: D) -> D:
            self.add(name, obj, help=help)  # type: ignore[arg-type]  # D is T at every sensible use
            return obj

        return decorate

    def remove(self, name: str) -> T:
        """Unregister ``name`` (tests registering toy entries clean up with it); returns its object."""
        spelling = self._spelling(name)
        del self._keys[self._key(spelling)], self._help[spelling]
        return self._objects.pop(spelling)

    def _spelling(self, name: str) -> str:
        objects = self._discovered()
        spelling = self._keys.get(self._key(name)) if isinstance(name, str) else None
        if spelling is None:
            known = ", ".join(objects) if objects else "none is registered"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, objects)}: choose one of {known}")
        return spelling

    @overload
    def get(self, name: str) -> T: ...
    @overload
    def get(self, name: str, default: D) -> T | D: ...

    def get(self, name, default=_MISSING):
        """The object registered as ``name``; unknown names raise a one-line `UnknownNameError` (an
        `UnpactError`) listing the known ones, unless a ``default`` is given (then that is returned)."""
        try:
            return self._objects[self._spelling(name)]
        except UnknownNameError:
            if default is _MISSING:
                raise
            return default

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._discovered())

    def help(self, name: str) -> str:
        """The one-line help ``name`` was registered with."""
        return self._help[self._spelling(name)]

    def describe(self) -> str:
        """One ``name: help`` line per entry (for --help texts and docs)."""
        return "\n".join(f"{n}: {self._help[n]}" if self._help[n] else n for n in self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._discovered()
        return isinstance(name, str) and self._key(name) in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._discovered())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


class UnknownNameError(UnpactError, KeyError):
    """An unknown name: an `UnpactError` for the CLI, and a `KeyError` for code that treats a registry as a dict."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0]) if self.args else ""


def import_submodules(package: str, first: Sequence[str] = ()) -> list[str]:
    """Import every module of ``package`` (not recursively; names starting with "_" are private and skipped)
    so that the registrations in them run; ``first`` (module names) are imported before the rest, which
    follow alphabetically — that fixes registration order, hence the order of names. Returns the full
    names imported."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    ordered = [n for n in first if n in names] + [n for n in names if n not in first]
    return [importlib.import_module(f"{package}.{n}").__name__ for n in ordered]
