"""The atom: the smallest unit a flow is made of (a task or a retry controller).

An atom declares the symbols it needs (from its ``execute`` signature,
``requires`` and ``rebind``) and the symbols its result provides
(``provides``).  The engine wires atoms together by those names.  All of the
argument analysis happens once, at construction, so a bad ``rebind`` is a
``ValueError`` where the atom is written, not a failure halfway through a run.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Union

from flowkit._names import check_name

__all__ = ["Atom", "AtomKind", "ProvidesSpec", "RebindSpec", "RequiresSpec"]

#: What ``provides=`` takes: one name, names (the result is unpacked by position), or None.
ProvidesSpec = Union[str, Sequence[str], "set[str]", "frozenset[str]", None]  # noqa: UP007 (string members)
#: What ``requires=`` takes: one name or names of extra arguments, or None.
RequiresSpec = str | Iterable[str] | None
#: What ``rebind=`` takes: new names by position, a mapping from argument to stored name, or None.
RebindSpec = Sequence[str] | Mapping[str, str] | None

_EMPTY: Mapping[str, Any] = {}
_NO_NAMES: frozenset[str] = frozenset()


class _Signature:
    """What one callable accepts, worked out once per function object."""

    __slots__ = ("required", "optional", "all_args", "var_kwargs", "var_args", "defaults")

    def __init__(self, function: Callable[..., Any]) -> None:
        params: Iterable[inspect.Parameter]
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):  # builtins without signatures
            params = ()
        required: list[str] = []
        optional: list[str] = []
        self.var_kwargs = False
        self.var_args = False
        self.defaults: dict[str, Any] = {}
        for index, param in enumerate(params):
            if index == 0 and param.name in ("self", "cls") and inspect.isfunction(function):
                # An unbound method looked up on the class.
                continue
            if param.kind is param.VAR_KEYWORD:
                self.var_kwargs = True
            elif param.kind is param.VAR_POSITIONAL:
                self.var_args = True
            elif param.default is param.empty:
                required.append(param.name)
            else:
                optional.append(param.name)
                self.defaults[param.name] = param.default
        self.required = tuple(required)
        self.optional = tuple(optional)
        self.all_args = frozenset(required) | frozenset(optional)


_SIGNATURES: dict[Any, _Signature] = {}


def signature_of(function: Callable[..., Any]) -> _Signature:
    """The (cached) argument analysis of ``function``."""
    key = getattr(function, "__func__", function)
    try:
        return _SIGNATURES[key]
    except KeyError:
        sig = _SIGNATURES[key] = _Signature(function)
        return sig
    except TypeError:  # unhashable callable object
        return _Signature(function)


def _save_as(atom_name: str, provides: ProvidesSpec) -> dict[str, Any]:
    """Map each provided symbol to where it comes from in the result.

    ``None`` as the index means the whole result, an ``int`` a position in a
    sequence result, a ``str`` a key of a dict result.
    """
    if provides is None:
        return {}
    if isinstance(provides, str):
        return {provides: None}
    if isinstance(provides, (set, frozenset)):
        for name in provides:
            if not isinstance(name, str):
                raise TypeError("atom %r: provides names must be strings, got %r" % (atom_name, name))
        return {name: name for name in sorted(provides)}
    if isinstance(provides, (list, tuple)):
        result: dict[str, Any] = {}
        for index, name in enumerate(provides):
            if not isinstance(name, str):
                raise TypeError("atom %r: provides names must be strings, got %r" % (atom_name, name))
            if name in result:
                raise ValueError("atom %r provides %r twice" % (atom_name, name))
            result[name] = index
        return result
    raise TypeError(
        "atom %r: provides must be a str, a list/tuple or a set of str, got %s" % (atom_name, type(provides).__name__)
    )


def build_arg_mapping(
    atom_name: str,
    function: Callable[..., Any],
    requires: RequiresSpec,
    rebind: RebindSpec,
    auto_extract: bool,
    ignore: Iterable[str] = (),
) -> tuple[dict[str, str], dict[str, str]]:
    """Work out ``(required, optional)``: argument name -> storage symbol.

    Raises ValueError naming the atom for a rebind of an argument the function
    does not accept, or a required argument left without a source.
    """
    sig = signature_of(function)
    ignored = frozenset(ignore)
    req_args = [a for a in sig.required if a not in ignored]
    required: dict[str, str] = {}
    if auto_extract:
        for arg in req_args:
            required[arg] = arg
    if requires:
        if isinstance(requires, str):
            requires = [requires]
        for name in requires:
            if not isinstance(name, str):
                raise TypeError("atom %r: requires names must be strings, got %r" % (atom_name, name))
            required[name] = name
    if rebind is not None:
        if isinstance(rebind, Mapping):
            for arg, symbol in rebind.items():
                if not isinstance(symbol, str):
                    raise TypeError("atom %r: rebind of %r must name a symbol (str), got %r" % (atom_name, arg, symbol))
                required[arg] = symbol
        elif isinstance(rebind, (list, tuple)):
            positional = req_args + [a for a in sig.optional if a not in ignored]
            for index, symbol in enumerate(rebind):
                if not isinstance(symbol, str):
                    raise TypeError("atom %r: rebind names must be strings, got %r" % (atom_name, symbol))
                arg = positional[index] if index < len(positional) else symbol
                required[arg] = symbol
        else:
            raise TypeError("atom %r: rebind must be a list or a dict, got %s" % (atom_name, type(rebind).__name__))
    if not sig.var_kwargs:
        extra = [a for a in required if a not in sig.all_args]
        if extra:
            raise ValueError(
                "atom %r: %s %s not accepted by %s() (it takes %s and no **kwargs)"
                % (
                    atom_name,
                    ", ".join(repr(a) for a in extra),
                    "is" if len(extra) == 1 else "are",
                    getattr(function, "__name__", "execute"),
                    ", ".join(repr(a) for a in sorted(sig.all_args - ignored)) or "no arguments",
                )
            )
    missing = [a for a in req_args if a not in required]
    if missing:
        raise ValueError(
            "atom %r: argument(s) %s of %s() have no source (auto_extract is off and "
            "neither requires nor rebind names them)"
            % (atom_name, ", ".join(repr(a) for a in missing), getattr(function, "__name__", "execute"))
        )
    optional: dict[str, str] = {}
    if auto_extract:
        for arg in sig.optional:
            if arg not in required and arg not in ignored:
                optional[arg] = arg
    return required, optional


class AtomKind(str, enum.Enum):
    """The two kinds of atom; the value is what a logbook records (``AtomDetail.atom_type``)."""

    #: A :class:`~flowkit.task.Task`: does work, and can undo it.
    TASK = "task"
    #: A :class:`~flowkit.retry.Retry` controller: decides what a failure under it does.
    RETRY = "retry"

    def __str__(self) -> str:
        return self.value


class Atom:
    """Base of :class:`~flowkit.task.Task` and :class:`~flowkit.retry.Retry`.

    Subclasses define ``execute`` (and usually ``revert``); what they need is
    read from ``execute``'s signature.  Constructor options:

    ``name``
        Unique within the flow tree; defaults to the qualified class name.
    ``provides``
        The symbol(s) the result is stored as: a str (whole result), a
        list/tuple (unpack a sequence result by position) or a set (pick those
        keys of a dict result).  Defaults to the class attribute ``default_provides``.
    ``requires``
        Extra symbols to pass to ``execute`` as keyword arguments.
    ``rebind``
        Take arguments from other symbols: a list (by position) or a dict
        ``{argument: symbol}``.
    ``inject``
        Constant values for this atom only: ``{symbol: value}``.
    ``priority``
        Among atoms ready at the same time, higher starts first.
    """

    default_provides: ClassVar[ProvidesSpec] = None
    #: Arguments of ``execute`` the engine fills itself (never from storage).
    _engine_args: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[tuple[int, int]] = (1, 0)

    def __init__(
        self,
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        inject: Mapping[str, Any] | None = None,
        ignore_list: Iterable[str] | None = None,
        priority: int = 0,
    ) -> None:
        if name is None:
            cls = type(self)
            name = "%s.%s" % (cls.__module__, cls.__qualname__)
        self.name = check_name(name, "atom name")
        if provides is None:
            provides = self.default_provides
        self.save_as = _save_as(name, provides)
        ignore = tuple(self._engine_args) + tuple(ignore_list or ())
        self.rebind, self._optional_args = build_arg_mapping(
            name, self._arg_source(), requires, rebind, auto_extract, ignore
        )
        self.inject: Mapping[str, Any] = dict(inject) if inject else _EMPTY
        if not isinstance(priority, int):
            raise TypeError("atom %r: priority must be an int, got %r" % (name, priority))
        self.priority = priority

    def _arg_source(self) -> Callable[..., Any]:
        """The callable whose signature says what ``execute`` needs."""
        return self.execute

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Do the atom's work; the return value is its result."""
        raise NotImplementedError("%s must define execute()" % type(self).__name__)

    @property
    def provides(self) -> frozenset[str]:
        """The symbols this atom's result is stored as."""
        return frozenset(self.save_as)

    @property
    def requires(self) -> frozenset[str]:
        """Symbols that must be available (from storage or other atoms) before it runs."""
        return frozenset(s for s in self.rebind.values() if s not in self.inject)

    @property
    def optional(self) -> frozenset[str]:
        """Symbols passed to ``execute`` when some atom or stored value provides them."""
        return frozenset(s for s in self._optional_args.values() if s not in self.inject)

    @property
    def optional_args(self) -> Mapping[str, str]:
        """Optional arguments: argument name -> symbol."""
        return self._optional_args

    def __repr__(self) -> str:
        return "%s(name=%r)" % (type(self).__name__, self.name)
