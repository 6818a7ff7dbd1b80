"""One facade over a flow's logbook: name -> value lookup, states, results.

:class:`Storage` is what ``engine.storage`` returns.  It reads and writes the
flow detail's atom details through a persistence connection; the engine
updates the same records as atoms run, so what a user reads here is exactly
what was written to the logbook.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.atom import AtomKind
from flowkit.persistence._integrity import ATOM_COUNT_KEY
from flowkit.persistence.base import Backend, Connection
from flowkit.persistence.models import AtomDetail, FlowDetail, _uuid_series
from flowkit.types.failure import Failure

if TYPE_CHECKING:
    from flowkit.engines._compiler import Compilation

__all__ = ["Storage", "extract_result", "provided_result"]

_STORE_KEY = "store"


def extract_result(result: Any, where: Any) -> Any:
    """The part of ``result`` a provided symbol names (see ``Atom.save_as``)."""
    if where is None:
        return result
    return result[where]


_SUCCESS = states.SUCCESS
_REVERTING = states.REVERTING
_RUNNING = states.RUNNING
_RETRYING = states.RETRYING
_RETRY_RESULT_STATES = (_SUCCESS, _RETRYING, _RUNNING, _REVERTING)
_RETRY_KIND = AtomKind.RETRY
# The plain values, by "is it a retry controller" (Enum.value is a slow property).
_KIND_VALUES = (AtomKind.TASK.value, AtomKind.RETRY.value)


def provided_result(detail: AtomDetail) -> tuple[bool, Any]:
    """``(True, result)`` when the atom of ``detail`` has a result others may read, else ``(False, None)``.

    The one rule for "does this atom have a result": the engine applies it
    to an atom's arguments and a decider's history, :meth:`Storage.fetch` to
    what it returns.  A task's result stands from SUCCESS until its revert
    is over (it still does while REVERTING).  A retry controller's result is
    its latest attempt's, while the controller stands (SUCCESS), is asked
    again (RUNNING, RETRYING) or is being reverted (REVERTING).
    """
    state = detail.state
    if detail.atom_type == _RETRY_KIND:
        results = detail.results
        if results and state in _RETRY_RESULT_STATES:
            return True, results[-1][0]
        return False, None
    # Identity first (the engine's states are the enum's members); equality
    # for a detail whose state is the plain string.
    if state is _SUCCESS or state is _REVERTING or state == _SUCCESS or state == _REVERTING:
        return True, detail.results
    return False, None


class Storage:
    """Values, states and results of one flow run, backed by its flow detail.

    Writes go through ``connection``; TaskFlow's spelling
    ``Storage(flow_detail, backend=backend)`` opens a connection of
    ``backend`` instead, and with neither the flow detail is kept in a new
    in-memory backend.
    """

    def __init__(
        self, flow_detail: FlowDetail, connection: Connection | None = None, *, backend: Backend | None = None
    ) -> None:
        if connection is None:
            if backend is None:
                from flowkit.persistence.backends.impl_memory import MemoryBackend

                backend = MemoryBackend()
            connection = backend.get_connection()
        elif backend is not None and connection.backend is not backend:
            raise ValueError("Storage: the connection given is not one of the backend given")
        self._flow_detail = flow_detail
        self._connection = connection
        self._lock = threading.RLock()
        self._by_name: dict[str, AtomDetail] = {ad.name: ad for ad in flow_detail}
        self._compilation: Compilation | None = None

    # -- engine-facing --------------------------------------------------------

    @property
    def flow_detail(self) -> FlowDetail:
        """The flow detail this storage reads and writes."""
        return self._flow_detail

    @property
    def connection(self) -> Connection:
        """The persistence connection writes go through."""
        return self._connection

    @property
    def backend(self) -> Backend:
        """The persistence backend the flow detail is written to."""
        return self._connection.backend

    @property
    def flow_name(self) -> str:
        """The name of the flow detail (the flow's name)."""
        return self._flow_detail.name

    @property
    def flow_uuid(self) -> str:
        """The uuid of the flow detail."""
        return self._flow_detail.uuid

    @property
    def flow_meta(self) -> dict[str, Any]:
        """The flow detail's metadata (the injected store, how to rebuild the flow, ...)."""
        return self._flow_detail.meta

    def get_atom_uuid(self, atom_name: str) -> str:
        """The uuid of the atom detail of ``atom_name``; NotFound when the flow detail has none."""
        return self._detail(atom_name).uuid

    def attach(self, compilation: Compilation) -> list[AtomDetail]:
        """Make sure every compiled atom has a detail; return them by atom index.

        A flow detail that never had a state gets PENDING.  What changed is
        written through the connection (durable at its next flush).
        """
        details: list[AtomDetail] = []
        created = False
        next_uuid = None
        with self._lock:
            if self._flow_detail.state is None:
                self._flow_detail.state = states.PENDING
                created = True
            for index, atom in enumerate(compilation.atoms):
                detail = self._by_name.get(atom.name)
                kind = compilation.kinds[index]
                if detail is None:
                    # The logbook records the plain value ("task"/"retry").
                    kind_value = _KIND_VALUES[kind is _RETRY_KIND]
                    if next_uuid is None:
                        # One uuid4 per attach, not per atom (a quarter of preparing a big flow).
                        next_uuid = _uuid_series().__next__
                    # Every field given, in order: keywords and the default
                    # factories cost more than the rest of making the detail.
                    detail = AtomDetail(
                        atom.name,
                        next_uuid(),
                        kind_value,
                        states.PENDING,
                        states.EXECUTE,
                        [] if kind is _RETRY_KIND else None,
                        None,
                        None,
                        None,
                        {},
                        tuple(atom.version),  # type: ignore[arg-type]
                    )
                    self._flow_detail.add(detail)
                    self._by_name[atom.name] = detail
                    created = True
                elif detail.atom_type != kind:
                    raise exc.InvalidState(
                        "atom %r is a %s in the flow but a %s in flow detail %r"
                        % (atom.name, kind, detail.atom_type, self._flow_detail.uuid)
                    )
                details.append(detail)
            self._compilation = compilation
            if created:
                # Written with the new details, in one transaction: a reader that finds
                # fewer details than this knows rows were lost (see persistence._integrity).
                recorded = self._flow_detail.meta.get(ATOM_COUNT_KEY)
                count = len(self._flow_detail)
                if not isinstance(recorded, int) or recorded < count:
                    self._flow_detail.meta[ATOM_COUNT_KEY] = count
                # New atom details: only a whole write stores them.
                self._save_flow(durable=False, atoms=True)
        return details

    def save_flow(self) -> None:
        """Write the flow detail (state and meta) durably."""
        self._save_flow()

    def _save_flow(self, durable: bool = True, atoms: bool = False) -> None:
        """Write the flow detail through the connection; flush it too if ``durable``.

        Its state and meta only, unless ``atoms``: every change to an atom
        detail is written where it is made (:meth:`save_atom`), so a flow's
        state change has no atom to write, and a backend need not compare
        every atom with what it stored to find that out.
        """
        try:
            if atoms:
                self._connection.update_flow_details(self._flow_detail)
            else:
                self._connection.update_flow_state(self._flow_detail)
            if durable:
                self._connection.flush()
        except exc.FlowkitError:
            raise
        except Exception as error:
            raise exc.StorageFailure(
                "could not save flow detail %r (%s): %s" % (self._flow_detail.name, self._flow_detail.uuid, error)
            ) from error

    def save_atom(self, detail: AtomDetail) -> None:
        """Write one atom detail through the connection."""
        self._connection.update_atom_details(detail)

    def set_flow_state(self, state: states.State, durable: bool = True) -> None:
        """Record the flow's state, durably unless ``durable`` is False.

        Without ``durable`` the state is only buffered, and becomes durable
        with the connection's next flush (the engine uses this for RUNNING,
        which its first atom's write-ahead record flushes anyway).
        """
        self._flow_detail.state = state
        self._save_flow(durable)

    # -- user-facing ------------------------------------------------------------

    def _detail(self, atom_name: str) -> AtomDetail:
        try:
            return self._by_name[atom_name]
        except KeyError:
            raise exc.NotFound("no atom named %r in flow detail %r" % (atom_name, self._flow_detail.name)) from None

    @property
    def injected(self) -> Mapping[str, Any]:
        """Values injected with ``store=`` or :meth:`inject`."""
        return self._flow_detail.meta.get(_STORE_KEY) or {}

    def inject(self, pairs: Mapping[str, Any]) -> None:
        """Add values that any atom may require by name (saved in the flow detail)."""
        with self._lock:
            store = dict(self._flow_detail.meta.get(_STORE_KEY) or {})
            store.update(pairs)
            self._flow_detail.meta[_STORE_KEY] = store
            self._save_flow()

    def get_flow_state(self) -> states.State:
        """The flow's state (PENDING before it first ran)."""
        state = self._flow_detail.state
        return states.State(state) if state else states.PENDING

    def get_atom_state(self, atom_name: str) -> states.State:
        """The state of the atom called ``atom_name``."""
        return states.State(self._detail(atom_name).state)

    def get_atoms_states(self, atom_names: Iterable[str]) -> dict[str, tuple[states.State, states.Intention]]:
        """``{name: (state, intention)}`` for each named atom."""
        result = {}
        for name in atom_names:
            detail = self._detail(name)
            result[name] = (states.State(detail.state), states.Intention(detail.intention))
        return result

    def get_atom_intention(self, atom_name: str) -> states.Intention:
        """What the engine intends to do with the atom next (EXECUTE, REVERT, ...)."""
        return states.Intention(self._detail(atom_name).intention)

    def get_task_progress(self, task_name: str) -> float:
        """The last progress the task reported (0.0 to 1.0)."""
        return float(self._detail(task_name).meta.get("progress", 0.0))

    def get_task_progress_details(self, task_name: str) -> Any:
        """Details passed with the last progress update, if any."""
        return self._detail(task_name).meta.get("progress_details")

    def get(self, atom_name: str) -> Any:
        """The atom's result, or its :class:`~flowkit.types.failure.Failure` if it failed.

        For a retry controller, the result of its latest attempt.
        """
        detail = self._detail(atom_name)
        if detail.failure is not None and detail.state in (states.FAILURE, states.REVERT_FAILURE):
            return detail.failure
        if detail.atom_type == _RETRY_KIND:
            if not detail.results:
                raise exc.NotFound("retry controller %r has no result yet" % (atom_name,))
            return detail.results[-1][0]
        if detail.state != states.SUCCESS and detail.failure is not None:
            return detail.failure
        if detail.state not in (states.SUCCESS, states.REVERTING, states.REVERTED, states.REVERT_FAILURE):
            raise exc.NotFound("atom %r has no result (it is %s)" % (atom_name, detail.state))
        return detail.results

    def get_revert_result(self, atom_name: str) -> Any:
        """What the atom's revert returned, or its revert Failure."""
        detail = self._detail(atom_name)
        if detail.revert_failure is not None:
            return detail.revert_failure
        return detail.revert_results

    def get_failures(self) -> dict[str, Failure]:
        """Atom name -> Failure of every atom whose execution failed."""
        return {ad.name: ad.failure for ad in self._flow_detail if ad.failure is not None}

    def get_revert_failures(self) -> dict[str, Failure]:
        """Atom name -> Failure of every atom whose revert failed."""
        return {ad.name: ad.revert_failure for ad in self._flow_detail if ad.revert_failure is not None}

    def _provided_value(self, detail: AtomDetail, where: Any) -> tuple[bool, Any]:
        found, result = provided_result(detail)
        if not found:
            return False, None
        try:
            return True, extract_result(result, where)
        except (LookupError, TypeError):
            return False, None

    def _values_of(self, name: str) -> list[Any]:
        # Injected values first, then atom results in flow order (TaskFlow's precedence).
        store = self.injected
        values = [store[name]] if name in store else []
        compilation = self._compilation
        if compilation is not None:
            for index, where in compilation.providers.get(name, ()):
                found, value = self._provided_value(self._by_name[compilation.atoms[index].name], where)
                if found:
                    values.append(value)
        return values

    def fetch(self, name: str, many_handler: Callable[[list[Any]], Any] | None = None) -> Any:
        """The value of symbol ``name``.

        Injected values come first, then results of atoms (in flow order);
        with several, ``many_handler(values)`` picks (default: the first).
        Raises NotFound when nothing has provided it.
        """
        values = self._values_of(name)
        if not values:
            raise exc.NotFound("nothing has provided %r in flow %r" % (name, self._flow_detail.name))
        if many_handler is not None:
            return many_handler(values)
        return values[0]

    def fetch_all(self, many_handler: Callable[[list[Any]], Any] | None = None) -> dict[str, Any]:
        """Every available symbol and its value.

        A symbol with several values maps to the list of them (or to
        ``many_handler(values)``).
        """
        names: list[str] = list(self.injected)
        if self._compilation is not None:
            names.extend(self._compilation.providers)
        result: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            values = self._values_of(name)
            if not values:
                continue
            if len(values) == 1:
                result[name] = values[0]
            elif many_handler is not None:
                result[name] = many_handler(values)
            else:
                result[name] = values
        return result

    def fetch_mapped_args(self, args_mapping: Mapping[str, str], optional_args: Iterable[str] = ()) -> dict[str, Any]:
        """``{argument: value}`` for ``{argument: symbol}``; optional ones only when available."""
        optional = set(optional_args)
        result: dict[str, Any] = {}
        for arg, symbol in args_mapping.items():
            values = self._values_of(symbol)
            if values:
                result[arg] = values[0]
            elif arg not in optional:
                raise exc.NotFound("nothing has provided %r (argument %r)" % (symbol, arg))
        return result
