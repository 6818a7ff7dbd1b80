"""Text about a failure and the atoms that led to it (TaskFlow's ``formatters``).

``FailureFormatter(engine).format(failure, atom_matcher)`` returns
``(exc_info, details)``: the failure's ``(type, exception, traceback)`` for
a logging call (None when the failure was read back from storage, and then
``details`` starts with its traceback text), and, while the failed atom was
running forward, the atoms that ran before it, most recent first, each with
its intention, state, arguments and result::

    2 predecessors (most recent first):
      Atom 'charge' {'intention': 'EXECUTE', 'state': 'SUCCESS', 'requires': {'card': '***'}, 'provides': 'ch-1'}
      |__Atom 'reserve' {'intention': 'EXECUTE', 'state': 'SUCCESS', 'requires': {}, 'provides': 'R-1'}

flowkit's execution graph has no flow nodes, so unlike TaskFlow no
``Flow '<name>'`` lines appear, and an atom reached along several paths is
shown once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowkit import exceptions as exc
from flowkit import states

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine
    from flowkit.types.failure import Failure

__all__ = ["FailureFormatter", "AtomNode"]

MASK = "***"


@dataclasses.dataclass(frozen=True)
class AtomNode:
    """What an ``atom_matcher`` is called with: ``item`` is the atom, ``metadata["kind"]`` its kind."""

    item: Any
    metadata: Mapping[str, Any]


def _shown_type(name: str) -> str:
    return name[len("builtins.") :] if name.startswith("builtins.") else name


def _masked(data: Any, keys: Collection[str]) -> Any:
    if not keys:
        return data
    if isinstance(data, dict):
        return {k: MASK if k in keys else _masked(v, keys) for k, v in data.items()}
    if isinstance(data, list):
        return [_masked(item, keys) for item in data]
    return data


class FailureFormatter:
    """Formats a failure with the atoms of ``engine`` that ran before the failed one.

    ``hide_inputs_outputs_of`` names atoms whose arguments and results are
    left out; ``mask_inputs_keys``/``mask_outputs_keys`` are keys whose
    values show as ``***`` wherever they appear in arguments or results.
    """

    def __init__(
        self,
        engine: Engine,
        hide_inputs_outputs_of: Iterable[str] = (),
        mask_inputs_keys: Iterable[str] = (),
        mask_outputs_keys: Iterable[str] = (),
    ) -> None:
        self._engine = engine
        self._hidden = frozenset(hide_inputs_outputs_of)
        self._mask_inputs = frozenset(mask_inputs_keys)
        self._mask_outputs = frozenset(mask_outputs_keys)

    def format(self, fail: Failure, atom_matcher: Callable[[AtomNode], bool] | str) -> tuple[Any, str]:
        """``(exc_info, details)`` for ``fail`` of the atom ``atom_matcher`` picks (a predicate or a name)."""
        lines: list[str] = []
        if fail.exc_info is None:
            # Remote or stored: the traceback text is all there is of it.
            lines.append("Failure: %s: %s" % (_shown_type(fail.exception_type_name), fail.exception_str))
            if fail.traceback_str:
                lines.append("Traceback (most recent call last):\n" + fail.traceback_str.rstrip("\n"))
        compilation = self._engine.compilation
        storage = self._engine.storage
        index = self._find(compilation, atom_matcher)
        if index is not None and storage.get_atom_intention(compilation.atoms[index].name) == states.EXECUTE:
            tree = self._predecessors(compilation, index)
            lines.append("%d predecessors (most recent first):" % len(tree))
            for depth, pred in tree:
                prefix = "  " if depth == 0 else "  " + "   " * (depth - 1) + "|__"
                lines.append(prefix + self._describe(compilation.atoms[pred]))
        return fail.exc_info, "\n".join(lines)

    @staticmethod
    def _find(compilation: Any, atom_matcher: Callable[[AtomNode], bool] | str) -> int | None:
        if isinstance(atom_matcher, str):
            return compilation.names.get(atom_matcher)
        for index, atom in enumerate(compilation.atoms):
            if atom_matcher(AtomNode(atom, {"kind": compilation.kinds[index].value})):
                return index
        return None

    @staticmethod
    def _predecessors(compilation: Any, start: int) -> list[tuple[int, int]]:
        """``(depth, atom index)`` of every atom before ``start``, depth first, most recent first, each once."""
        preds = compilation.preds
        seen = {start}
        found: list[tuple[int, int]] = []
        stack = [(0, p) for p in sorted(preds[start])]
        while stack:
            depth, index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            found.append((depth, index))
            stack.extend((depth + 1, p) for p in sorted(preds[index]) if p not in seen)
        return found

    def _describe(self, atom: Any) -> str:
        storage = self._engine.storage
        name = atom.name
        attrs: dict[str, Any] = {}
        for key, read in (("intention", storage.get_atom_intention), ("state", storage.get_atom_state)):
            try:
                attrs[key] = str(read(name))
            except (exc.NotFound, exc.StorageFailure):
                pass
        if name not in self._hidden:
            try:
                attrs["requires"] = _masked(
                    storage.fetch_mapped_args(atom.rebind, optional_args=atom.optional_args), self._mask_inputs
                )
            except (exc.NotFound, exc.StorageFailure):
                pass
            try:
                attrs["provides"] = _masked(storage.get(name), self._mask_outputs)
            except (exc.NotFound, exc.StorageFailure):
                pass
        return "Atom %r %s" % (name, attrs) if attrs else "Atom %r" % (name,)
