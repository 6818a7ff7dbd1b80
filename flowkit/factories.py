"""The registry of flow factories: the only way stored data reaches code.

A flow is code and the logbook holds data, so a flow detail records *which
factory* builds its flow (``meta["factory"]["name"]``) and the JSON arguments
it was called with.  Anyone who can write to the database can rewrite that
record, so the name is looked up here, among factories this process was told
about, and never imported::

    from flowkit.factories import flow_factory

    @flow_factory                      # registered as "myapp.flows:make_order"
    def make_order(order_id): ...

    @flow_factory("orders.refund")     # registered under a name of your own
    def make_refund(order_id): ...

A factory becomes known in one of four ways, all of them decided by the
people who run the process, never by the data it reads:

- the :func:`flow_factory` decorator or :func:`register`, run when the module
  that defines the factory is imported (by the application, or by the
  ``flowkit`` command's ``--import MODULE``);
- :func:`flowkit.engines.load_from_factory`,
  :func:`flowkit.engines.save_factory_details` and
  :func:`flowkit.conductors.posting.post_flow`, which register the factory they are
  given (under its ``"module:qualname"`` name, which is what they record);
- an entry point in the group ``flowkit.factories`` of an installed
  distribution (the entry point's name is the factory name).  Installing a
  package is trusting its code, so loading one of its entry points is no more
  than importing it; entry points are read once, lazily, and one is loaded
  only when its name is asked for and not already registered;
- an allowlist of module prefixes (``allowed_modules=[...]``, the command's
  ``--allow-module PREFIX``): a ``"module:qualname"`` name whose module is a
  prefix or below one (``myapp`` allows ``myapp.flows``, not ``myapp_evil``)
  is imported.  This is the escape hatch for code that cannot register its
  factories: any top-level callable of an allowed module can then be called
  with arguments read from the database, so keep the prefixes narrow.

Any other name is refused with :class:`~flowkit.exceptions.UnknownFactory`
before anything is imported or called.

A factory may declare a version and the migrations from its older versions
(see :mod:`flowkit.versioning`)::

    @flow_factory(version=3, migrations={2: Migration(rename={"allocate_ip": "allocate_address"})})
    def make_network(order_id): ...

The version is recorded with the factory's name in the flow detail; a resume
by code of a later version applies the migrations from the recorded version
on (``migrations[2]`` takes a flow detail of version 2 to version 3).
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from flowkit import _imports
from flowkit.exceptions import UnknownFactory

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from flowkit.persistence.models import FlowDetail
    from flowkit.versioning import Migration

__all__ = [
    # registering
    "register",
    "flow_factory",
    # looking up
    "FactoryRegistry",
    "default_registry",
    "ENTRY_POINT_GROUP",
]

#: The entry point group where installed distributions declare flow factories.
ENTRY_POINT_GROUP = "flowkit.factories"

F = TypeVar("F", bound=Callable[..., Any])

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# Stored names are shown in messages; a tampered row may hold megabytes.
_SHOWN = 120


def _shown(name: object) -> str:
    text = repr(name)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "...'"


def _prefixes(allowed_modules: Iterable[str] | None) -> tuple[str, ...]:
    if allowed_modules is None:
        return ()
    if isinstance(allowed_modules, str):
        raise TypeError("allowed_modules must be a list of module prefixes, not the string %r" % (allowed_modules,))
    prefixes = tuple(allowed_modules)
    for prefix in prefixes:
        if not isinstance(prefix, str) or not _DOTTED.match(prefix):
            # An empty or odd prefix must not quietly allow everything.
            raise ValueError("allowed module prefix %r is not a dotted module name such as 'myapp.flows'" % (prefix,))
    return prefixes


def _allowed(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _natural_name(factory: Callable[..., Any]) -> str:
    """The ``"module:qualname"`` a factory is registered under when no name is given.

    A script run as ``python -m pkg.mod`` is named after ``pkg.mod``, not
    ``__main__``.  Raises ValueError for callables that have no top-level
    name to tell them apart by (lambdas, functions defined inside functions).
    """
    if not callable(factory):
        raise ValueError("flow factory must be callable, got %r" % (factory,))
    module = getattr(factory, "__module__", None)
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = str(spec.name)
    qualname = getattr(factory, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        # "<lambda>" and "<locals>" mark callables whose name is not unique.
        raise ValueError(
            "flow factory %r cannot be imported by name (qualified name %r in module %r); "
            "use a function defined at the top level of a module, or register it under a name of your own"
            % (factory, qualname, module)
        )
    return "%s:%s" % (module, qualname)


def _code_location(func: Any) -> tuple[str, int] | None:
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    return None if code is None else (code.co_filename, code.co_firstlineno)


def _same(a: Any, b: Any) -> bool:
    # ``==``: each access to a classmethod makes a new, equal, bound method.
    # Same code location: the copy of a module run with ``python -m`` and the
    # imported one, or a module reloaded.
    return a is b or a == b or _code_location(a) == _code_location(b) is not None


class FactoryRegistry:
    """Flow factories by name; what resuming, drawing and conductors may call.

    ``allowed_modules`` (module prefixes) lets :meth:`resolve` import names
    below them that are not registered; ``entry_points`` (default True) makes
    the distributions' ``flowkit.factories`` entry points known.  Safe to use
    from several threads.
    """

    def __init__(self, *, allowed_modules: Iterable[str] | None = None, entry_points: bool = True) -> None:
        self.allowed_modules: tuple[str, ...] = _prefixes(allowed_modules)
        """Module prefixes whose ``"module:qualname"`` names may be imported."""
        self._entry_points_wanted = entry_points
        self._lock = threading.RLock()
        self._factories: dict[str, Callable[..., Any]] = {}
        self._names: dict[Any, str] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._versions: dict[str, tuple[int, dict[int, Any]]] = {}

    # -- registering ------------------------------------------------------------------

    def register(
        self,
        factory: F,
        name: str | None = None,
        *,
        version: int | None = None,
        migrations: Mapping[int, Migration] | None = None,
    ) -> F:
        """Make ``factory`` known as ``name`` (default: its ``"module:qualname"``); return it.

        Registering the same factory again is a no-op.  Raises ValueError when
        ``name`` is taken by a different factory.  ``version`` (a positive
        int) is recorded in the flow details the factory builds;
        ``migrations`` maps an older version ``v`` to the
        :class:`~flowkit.versioning.Migration` that takes a flow detail of
        version ``v`` to ``v + 1``.
        """
        declared = _check_versions(factory, version, migrations)
        if name is None:
            name = _natural_name(factory)
        elif not callable(factory):
            raise ValueError("flow factory must be callable, got %r" % (factory,))
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a flow factory's name must be a non-empty str, got %r" % (name,))
        with self._lock:
            existing = self._factories.get(name)
            if existing is not None and not _same(existing, factory):
                raise ValueError(
                    "flow factory name %r is already registered to %r; cannot register %r under it"
                    % (name, existing, factory)
                )
            self._factories[name] = factory
            if declared is not None:
                self._versions[name] = declared
            try:
                self._names.setdefault(factory, name)
            except TypeError:  # an unhashable callable: found by name_of's scan
                pass
        return factory

    def unregister(self, name: str) -> None:
        """Forget the factory registered as ``name`` (KeyError if there is none)."""
        with self._lock:
            factory = self._factories.pop(name)
            try:
                if self._names.get(factory) == name:
                    del self._names[factory]
            except TypeError:
                pass

    def name_of(self, factory: Callable[..., Any]) -> str | None:
        """The name ``factory`` was first registered under, or None."""
        with self._lock:
            try:
                found = self._names.get(factory)
            except TypeError:
                found = None
            if found is not None:
                return found
            for name, registered in self._factories.items():
                if registered is factory or registered == factory:
                    return name
        return None

    def version_of(self, name: str) -> int | None:
        """The version the factory registered as ``name`` declared, or None."""
        with self._lock:
            found = self._versions.get(name)
        return None if found is None else found[0]

    def migration_for(self, name: str, recorded: int) -> Migration | None:
        """The migration from version ``recorded`` of factory ``name`` to its version now (None: none needed).

        The migrations declared for the versions in between are applied one
        after the other (a version without one changed nothing a resume
        minds).  Raises ValueError when the recorded version is newer than
        the code's.
        """
        with self._lock:
            found = self._versions.get(name)
        if found is None or recorded == found[0]:
            return None
        current, migrations = found
        if recorded > current:
            raise ValueError(
                "flow factory %s is version %d here, but the flow detail was built by its version %d: "
                "resume it with code at least that new" % (_shown(name), current, recorded)
            )
        from flowkit.versioning import Migration

        combined = Migration()
        for step in range(recorded, current):
            if step in migrations:
                combined = combined.then(migrations[step])
        return combined

    # -- looking up ---------------------------------------------------------------------

    def names(self) -> frozenset[str]:
        """Every name :meth:`resolve` knows without an allowlist (registered or an entry point)."""
        with self._lock:
            return frozenset(self._factories) | frozenset(self._discovered())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._lock:
            return name in self._factories or name in self._discovered()

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return "<FactoryRegistry %d registered, allowed_modules=%r>" % (len(self._factories), self.allowed_modules)

    def resolve(
        self,
        name: str,
        *,
        flow_detail: FlowDetail | None = None,
        allowed_modules: Iterable[str] | None = None,
    ) -> Callable[..., Any]:
        """The factory registered as ``name``.

        Looks in this order: registered factories; an entry point of that
        name (loaded, then registered); a ``"module:qualname"`` under this
        registry's ``allowed_modules`` or the ``allowed_modules`` given here
        (imported, and accepted only if the object found is defined there
        under that name).  Anything else raises
        :class:`~flowkit.exceptions.UnknownFactory` before any import; the
        message names ``flow_detail`` when given.
        """
        extra = _prefixes(allowed_modules)
        entry = None
        with self._lock:
            found = self._factories.get(name) if isinstance(name, str) else None
            if found is not None:
                return found
            if isinstance(name, str):
                entry = self._discovered().get(name)
        if entry is not None:
            # Loaded outside the lock: importing the package may register
            # factories (here or in another registry) from its decorators.
            return self._load_entry_point(entry, flow_detail)
        prefixes = self.allowed_modules + extra
        module, _, qualname = name.partition(":") if isinstance(name, str) else ("", "", "")
        if prefixes and _DOTTED.match(module) and _DOTTED.match(qualname) and _allowed(module, prefixes):
            return self._import(name, module, qualname, prefixes, flow_detail)
        raise UnknownFactory(self._unknown_message(name, flow_detail, module, prefixes), name, flow_detail)

    # -- the three ways past the registered names ------------------------------------------

    def _discovered(self) -> dict[str, EntryPoint]:
        if not self._entry_points_wanted:
            return {}
        if self._entry_points is None:
            from importlib.metadata import entry_points

            found: dict[str, EntryPoint] = {}
            for entry in entry_points(group=ENTRY_POINT_GROUP):
                found.setdefault(entry.name, entry)  # the first distribution on sys.path wins, as for imports
            self._entry_points = found
        return self._entry_points

    def _load_entry_point(self, entry: EntryPoint, flow_detail: FlowDetail | None) -> Callable[..., Any]:
        try:
            factory = entry.load()
        except Exception as error:
            raise UnknownFactory(
                "%sfactory %s is the entry point %r of group %r, which failed to load (%s: %s)"
                % (
                    _about(flow_detail),
                    _shown(entry.name),
                    entry.value,
                    ENTRY_POINT_GROUP,
                    type(error).__name__,
                    error,
                ),
                entry.name,
                flow_detail,
            ) from error
        if not callable(factory):
            raise UnknownFactory(
                "%sfactory %s is the entry point %r of group %r, which is not callable (%r)"
                % (_about(flow_detail), _shown(entry.name), entry.value, ENTRY_POINT_GROUP, factory),
                entry.name,
                flow_detail,
            )
        with self._lock:
            # Two threads may have loaded it at once; the first to register wins.
            if entry.name not in self._factories:
                self.register(factory, entry.name)
            return self._factories[entry.name]

    def _import(
        self, name: str, module: str, qualname: str, prefixes: tuple[str, ...], flow_detail: FlowDetail | None
    ) -> Callable[..., Any]:
        if any(part.startswith("__") for part in qualname.split(".")):
            raise UnknownFactory(
                "%sfactory %s names a dunder attribute; an allowed module's factories are its "
                "top-level functions and classes' methods" % (_about(flow_detail), _shown(name)),
                name,
                flow_detail,
            )
        try:
            obj: Any = importlib.import_module(module)
        except Exception as error:
            raise UnknownFactory(
                "%sfactory %s is in allowed module %r, which cannot be imported (%s: %s)"
                % (_about(flow_detail), _shown(name), module, type(error).__name__, error),
                name,
                flow_detail,
            ) from error
        with self._lock:
            registered = self._factories.get(name)  # the module's own decorators may have run
        if registered is not None:
            return registered
        try:
            obj = _imports.lookup(obj, qualname, name)
        except _imports.ResolveError as error:
            raise UnknownFactory(
                "%sfactory %s: allowed module %r has no %r" % (_about(flow_detail), _shown(name), module, qualname),
                name,
                flow_detail,
            ) from error
        # Only what is *defined* there under that name: ``myapp:system`` after
        # ``from os import system``, or ``myapp:os.system``, is os's code.
        if (
            not callable(obj)
            or getattr(obj, "__module__", None) != module
            or getattr(obj, "__qualname__", None) != qualname
        ):
            raise UnknownFactory(
                "%sfactory %s: %r is not a callable defined in allowed module %r under that name "
                "(it is %r from module %r)"
                % (
                    _about(flow_detail),
                    _shown(name),
                    qualname,
                    module,
                    type(obj).__name__,
                    getattr(obj, "__module__", None),
                ),
                name,
                flow_detail,
            )
        return obj

    def _unknown_message(
        self, name: object, flow_detail: FlowDetail | None, module: str, prefixes: tuple[str, ...]
    ) -> str:
        why = ""
        if prefixes:
            why = " (its module %s is not under the allowed modules %s)" % (
                _shown(module),
                ", ".join(repr(p) for p in prefixes),
            )
        return (
            "%sfactory %s is not registered in this process%s, and flowkit never imports code named by stored "
            "data. To make it known: decorate the factory with @flowkit.factories.flow_factory (or call "
            "flowkit.factories.register()) in a module this process imports (flowkit command: --import MODULE); "
            "or install it as an entry point of group %r; or, as a last resort, allow its module with "
            "allowed_modules=[...] (flowkit command: --allow-module PREFIX)"
            % (_about(flow_detail), _shown(name), why, ENTRY_POINT_GROUP)
        )


def _check_versions(
    factory: Any, version: int | None, migrations: Mapping[int, Any] | None
) -> tuple[int, dict[int, Any]] | None:
    if version is None:
        if migrations:
            raise ValueError("flow factory %r declares migrations but no version" % (factory,))
        return None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError("flow factory %r: version must be a positive int, got %r" % (factory, version))
    from flowkit.versioning import Migration

    checked: dict[int, Any] = {}
    for step, migration in (migrations or {}).items():
        if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step < version:
            raise ValueError(
                "flow factory %r (version %d): migrations are keyed by an older version (1 to %d), got %r"
                % (factory, version, version - 1, step)
            )
        if not isinstance(migration, Migration):
            raise TypeError(
                "flow factory %r: migrations[%d] must be a flowkit.versioning.Migration, got %r"
                % (factory, step, migration)
            )
        checked[step] = migration
    return version, checked


def _about(flow_detail: FlowDetail | None) -> str:
    if flow_detail is None:
        return ""
    return "cannot rebuild the flow of flow detail %s (%s): " % (_shown(flow_detail.name), flow_detail.uuid)


#: The process-wide registry: what :func:`register` and :func:`flow_factory`
#: fill, and what resuming and conductors use unless given another.
default_registry = FactoryRegistry()


def register(
    factory: F,
    name: str | None = None,
    *,
    version: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
) -> F:
    """Register ``factory`` in :data:`default_registry` as ``name`` (default: ``"module:qualname"``).

    ``version`` and ``migrations``: see :meth:`FactoryRegistry.register`.
    """
    return default_registry.register(factory, name, version=version, migrations=migrations)


@overload
def flow_factory(factory: F, /) -> F: ...


@overload
def flow_factory(
    name: str | None = None,
    /,
    *,
    version: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
) -> Callable[[F], F]: ...


@overload
def flow_factory(
    *, name: str, version: int | None = None, migrations: Mapping[int, Migration] | None = None
) -> Callable[[F], F]: ...


def flow_factory(
    arg: Any = None,
    /,
    *,
    name: str | None = None,
    version: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
) -> Any:
    """Decorator registering a flow factory in :data:`default_registry`.

    ``@flow_factory`` registers it as ``"module:qualname"``;
    ``@flow_factory("name")`` (or ``name="name"``) under that name.
    ``@flow_factory(version=3, migrations={2: Migration(...)})`` declares the
    factory's version and how flow details of older versions are migrated
    when they are resumed (see :mod:`flowkit.versioning`).  The function is
    returned unchanged.
    """
    if callable(arg):
        if name is not None or version is not None or migrations is not None:
            raise TypeError("flow_factory(factory, name=...) is register(factory, name)")
        return register(arg)
    if arg is not None and not isinstance(arg, str):
        raise TypeError("flow_factory() takes a factory or a name, got %r" % (arg,))
    if arg is not None and name is not None:
        raise TypeError("flow_factory() got the name twice (%r and %r)" % (arg, name))
    chosen = arg if arg is not None else name

    def decorate(factory: F) -> F:
        return register(factory, chosen, version=version, migrations=migrations)

    return decorate
