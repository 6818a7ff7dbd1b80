"""Changing a flow's code safely: the structure a run was started with, and what a resume may change.

A flow outlives the deployment that started it: a run is killed, the code is
edited and deployed, and the flow is resumed from its logbook with the new
code.  Without a check the resume trusts the logbook blindly: a renamed task
runs a second time under its new name, a removed task is left RUNNING for
ever.  So the first time a flow detail is prepared, its flow's **structure**
is recorded in ``FlowDetail.meta["structure"]`` (:func:`fingerprint`: each
atom's kind, name, version, provides and retry scope, and a digest of all of
that plus the edges), and every resume through
:func:`~flowkit.engines.load_from_detail` (``flowkit resume``, conductors)
compares the flow rebuilt from code with it and with the atom details
(:func:`compare`) before anything runs.

A difference is **compatible** when resuming cannot run a finished atom again
or leave one behind, and it is recorded in ``meta["changes"]``:

- an atom added that no finished atom depends on;
- an atom removed that never started;
- a minor version bump (``(1, 0)`` -> ``(1, 1)``), or any bump of an atom
  that has not started (it runs with its new version);
- atoms that have not started reordered, moved into or out of a retry scope,
  or given other provides.

It is **incompatible**, and :class:`~flowkit.exceptions.FlowChanged` is raised
listing each, when:

- a finished or running atom was removed (a rename is a removal plus an
  addition; the message suggests the rename when the two look alike);
- a finished atom would depend on an atom that has not run (an atom added or
  moved before it, a new retry controller around it);
- a finished atom's major version changed, or what it provides, or its kind.

A :class:`Migration` says what to do instead, and is applied before the
check, atomically with the record of it: ``rename`` gives an atom detail the
atom's new name (its result and state are kept), ``drop`` retires the atom
details of atoms the code no longer has (IGNORE, ``meta["dropped"]``: never
run or reverted again), ``rerun`` makes atoms run again (their result is
forgotten).  A factory can declare its own by version
(``@flow_factory(version=3, migrations={2: Migration(...)})``, see
:mod:`flowkit.factories`).

Versions: an atom's ``version`` class attribute is ``(major, minor)``.  Bump
the minor number for a change that keeps the meaning of a stored result (a
fix, a log line); bump the major number when a result stored by the old code
must not be used by the new code: a resume then refuses until a migration
re-runs the atom (``rerun``).  The atom detail records the version each atom
ran with (``flowkit show``'s VERSION column).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.persistence import _structure
from flowkit.persistence.models import AtomDetail, FlowDetail

if TYPE_CHECKING:
    from flowkit.engines._compiler import Compilation

__all__ = [
    # changes
    "Difference",
    "Migration",
    "compare",
    "apply_migration",
    "check_resume",
    # the recorded structure
    "fingerprint",
    "STRUCTURE_KEY",
    "CHANGES_KEY",
    "DROPPED_KEY",
    "MAX_RECORDED_ATOMS",
]

#: The key of ``FlowDetail.meta`` holding the structure the flow detail runs (:func:`fingerprint`).
#: The structure is replaced, never changed in place: backends store it once per object.
STRUCTURE_KEY = _structure.STRUCTURE_KEY
#: The key of ``FlowDetail.meta`` holding the history of accepted changes and migrations.
CHANGES_KEY = "changes"
#: The key of ``AtomDetail.meta`` marking an atom detail retired by ``Migration(drop=...)``.
DROPPED_KEY = "dropped"
#: Above this many atoms only the digest is recorded (every state write carries the flow detail's
#: meta): provides and scope changes of such a flow are then not compared, the other rules apply.
MAX_RECORDED_ATOMS = 2000
#: How many change records ``meta["changes"]`` keeps (the oldest are dropped).
MAX_CHANGE_RECORDS = 50

_FORMAT = 1
# States of an atom that will not run again on a resume: what it did stands.
_FINISHED = frozenset(
    [states.SUCCESS, states.IGNORE, states.FAILURE, states.REVERTED, states.REVERT_FAILURE, states.BROKEN]
)
# States of a predecessor that has not (or not yet again) produced a result.
_NOT_RUN = frozenset([states.PENDING, states.RUNNING, states.WAITING, states.RETRYING])
# States an atom can be depended on in: its successors may run.
_DONE = frozenset([states.SUCCESS, states.IGNORE])


# -- the structure -------------------------------------------------------------------------


def _atom_entries(compilation: Compilation) -> list[dict[str, Any]]:
    return _describe(compilation, True)[1]


def _describe(compilation: Compilation, entries: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """One line per atom for the digest and, if ``entries``, the recorded entry of each atom.

    One pass over the atoms (this runs once per new flow detail, for flows
    of 100,000 atoms too): name, kind, version, provides, scope, successors.
    """
    c = compilation
    atoms = c.atoms
    names = [atom.name for atom in atoms]
    is_retry = c.is_retry
    owner = c.owner
    parent_retry = c.parent_retry
    succs = c.succs
    lines = []
    made: list[dict[str, Any]] = []
    for index, atom in enumerate(atoms):
        retry = is_retry[index]
        parent = parent_retry.get(index, -1) if retry else owner[index]
        provides = sorted(atom.save_as)
        version = atom.version
        scope = None if parent == -1 else names[parent]
        kind = "retry" if retry else "task"
        lines.append(
            "%s\x1f%s\x1f%d.%d\x1f%s\x1f%s\x1f%s"
            % (
                names[index],
                kind,
                version[0],
                version[1],
                ",".join(provides),
                "" if scope is None else scope,
                ",".join([names[s] for s in succs[index]]),
            )
        )
        if entries:
            made.append(
                {
                    "name": names[index],
                    "kind": kind,
                    "version": [int(version[0]), int(version[1])],
                    "provides": provides,
                    "scope": scope,
                }
            )
    return lines, made


def fingerprint(compilation: Compilation) -> dict[str, Any]:
    """The structure of a compiled flow as JSON data, what ``meta["structure"]`` records.

    ``{"format": 1, "digest": ..., "count": N, "atoms": [{"name", "kind",
    "version", "provides", "scope"}, ...]}``: ``scope`` is the retry
    controller whose scope holds the atom (None: the flow's).  The digest
    covers the atoms and every edge of the execution graph, so two flows with
    the same digest resume alike.  Above :data:`MAX_RECORDED_ATOMS` atoms,
    ``atoms`` is left out.
    """
    count = len(compilation.atoms)
    lines, entries = _describe(compilation, count <= MAX_RECORDED_ATOMS)
    record: dict[str, Any] = {
        "format": _FORMAT,
        "digest": hashlib.sha256("\x1e".join(lines).encode("utf-8", "surrogatepass")).hexdigest(),
        "count": count,
    }
    if count <= MAX_RECORDED_ATOMS:
        record["atoms"] = entries
    return record


def _recorded_atoms(flow_detail: FlowDetail) -> dict[str, dict[str, Any]] | None:
    """The atoms of the recorded structure by name, or None when there is none (or it is unusable).

    The record is data read from storage: anything that is not the expected
    shape is treated as no record, never trusted in part.
    """
    record = flow_detail.meta.get(STRUCTURE_KEY)
    if not isinstance(record, Mapping) or record.get("format") != _FORMAT:
        return None
    atoms = record.get("atoms")
    if not isinstance(atoms, list):
        return None
    found: dict[str, dict[str, Any]] = {}
    for entry in atoms:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            return None
        provides = entry.get("provides")
        scope = entry.get("scope")
        if not isinstance(provides, list) or not all(isinstance(p, str) for p in provides):
            return None
        if scope is not None and not isinstance(scope, str):
            return None
        found[entry["name"]] = dict(entry)
    return found


def _recorded_digest(flow_detail: FlowDetail) -> str | None:
    record = flow_detail.meta.get(STRUCTURE_KEY)
    if isinstance(record, Mapping) and isinstance(record.get("digest"), str):
        return str(record["digest"])
    return None


# -- differences ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Difference:
    """One difference between the flow in code and the flow its logbook ran.

    ``kind`` is one of ``"added"``, ``"removed"``, ``"renamed"`` (a
    migration's rename), ``"dropped"``, ``"rerun"``, ``"version"``,
    ``"provides"``, ``"scope"``, ``"order"``, ``"kind"``; ``atoms`` names the
    atoms concerned (the first is the one changed); ``compatible`` says
    whether a resume can absorb it; ``text`` says it in words.
    """

    kind: str
    atoms: tuple[str, ...]
    compatible: bool
    text: str

    def to_data(self) -> dict[str, Any]:
        """The difference as JSON data (what ``flowkit plan --json`` prints)."""
        return {"kind": self.kind, "atoms": list(self.atoms), "compatible": self.compatible, "text": self.text}


def _version(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) >= 2 and all(isinstance(v, int) for v in value[:2]):
        return int(value[0]), int(value[1])
    return None


def _shown_version(version: tuple[int, int] | None) -> str:
    return "?" if version is None else "%d.%d" % version


def compare(compilation: Compilation, flow_detail: FlowDetail) -> list[Difference]:
    """Every difference between ``compilation`` (the flow in code) and what ``flow_detail`` ran.

    Reads only: nothing is changed.  A flow detail that recorded no structure
    (one started before flowkit recorded it) is compared through its atom
    details alone: removals, versions, kinds and order.
    """
    c = compilation
    recorded = _recorded_atoms(flow_detail)
    digest = _recorded_digest(flow_detail)
    details = {ad.name: ad for ad in flow_detail if not isinstance(ad.meta.get(DROPPED_KEY), Mapping)}
    found: list[Difference] = []
    if digest is not None and digest == fingerprint(c)["digest"] and all(a.name in details for a in c.atoms):
        return found
    entries = {entry["name"]: entry for entry in _atom_entries(c)}
    new_names = [atom.name for atom in c.atoms]
    added = [n for n in new_names if n not in details and (recorded is None or n not in recorded)]
    removed = [n for n in details if n not in entries]
    for name in added:
        found.append(Difference("added", (name,), True, "atom %r was added" % (name,)))
    for name in removed:
        ad = details[name]
        state = ad.state
        if state == states.PENDING and ad.failure is None:
            found.append(Difference("removed", (name,), True, "atom %r, which never ran, was removed" % (name,)))
            continue
        look_alike = [n for n in added if _look_alike(ad, recorded, entries[n])]
        hint = ""
        if look_alike:
            hint = " (renamed to %s? Migration(rename={%r: %r}))" % (
                " or ".join(repr(n) for n in look_alike),
                name,
                look_alike[0],
            )
        what = "running" if state not in _FINISHED else "finished (%s)" % (state,)
        found.append(
            Difference(
                "removed",
                (name, *look_alike),
                False,
                "atom %r, %s in the logbook, was removed%s; Migration(drop=[%r]) leaves it as it is"
                % (name, what, hint, name),
            )
        )
    for index, atom in enumerate(c.atoms):
        current = details.get(atom.name)
        if current is None:
            continue
        ad = current
        finished = ad.state in _FINISHED
        entry = entries[atom.name]
        kind = entry["kind"]
        if ad.atom_type != kind:
            found.append(
                Difference(
                    "kind",
                    (atom.name,),
                    False,
                    "atom %r is a %s in the code but a %s in the logbook" % (atom.name, kind, ad.atom_type),
                )
            )
            continue
        old = _version(ad.version)
        new = _version(entry["version"])
        if old is not None and new is not None and old != new:
            major = old[0] != new[0]
            started = ad.state != states.PENDING
            found.append(
                Difference(
                    "version",
                    (atom.name,),
                    not (major and finished and started),
                    "atom %r went from version %s to %s%s"
                    % (
                        atom.name,
                        _shown_version(old),
                        _shown_version(new),
                        "; it finished with the old major version: Migration(rerun=[%r]) runs it again" % atom.name
                        if major and finished and started
                        else "",
                    ),
                )
            )
        before = recorded.get(atom.name) if recorded is not None else None
        if before is not None:
            if sorted(before["provides"]) != entry["provides"]:
                found.append(
                    Difference(
                        "provides",
                        (atom.name,),
                        not (finished and ad.state != states.PENDING),
                        "atom %r provided %s and now provides %s%s"
                        % (
                            atom.name,
                            _symbols(before["provides"]),
                            _symbols(entry["provides"]),
                            "; its stored result is not what the new code reads: Migration(rerun=[%r]) runs it "
                            "again" % atom.name
                            if finished
                            else "",
                        ),
                    )
                )
            if before.get("scope") != entry["scope"]:
                found.append(
                    Difference(
                        "scope",
                        (atom.name,),
                        True,
                        "atom %r moved from %s to %s"
                        % (atom.name, _scope_text(before.get("scope")), _scope_text(entry["scope"])),
                    )
                )
        # Only a result that stands can be made stale by a predecessor that has
        # not run: a FAILURE or REVERTED atom is one a revert or retry in progress
        # handles, whatever state its predecessors are in.
        if ad.state in _DONE:
            for p in c.preds[index]:
                pred = c.atoms[p].name
                pd = details.get(pred)
                if pd is None and recorded is not None and pred in recorded:
                    continue  # a lost row, not a change: the consistency check names it
                if pd is None or pd.state in _NOT_RUN:
                    found.append(
                        Difference(
                            "order",
                            (atom.name, pred),
                            False,
                            "finished atom %r would now run after atom %r, which %s; Migration(rerun=[%r]) runs "
                            "%r again after it"
                            % (
                                atom.name,
                                pred,
                                "is new" if pd is None else "is %s" % (pd.state,),
                                atom.name,
                                atom.name,
                            ),
                        )
                    )
    return found


def _symbols(symbols: Iterable[str]) -> str:
    listed = sorted(symbols)
    return "nothing" if not listed else ", ".join(repr(s) for s in listed)


def _scope_text(scope: Any) -> str:
    return "the flow's scope" if scope is None else "the scope of retry controller %r" % (scope,)


def _look_alike(old: AtomDetail, recorded: dict[str, dict[str, Any]] | None, new: dict[str, Any]) -> bool:
    """Whether the new atom ``new`` could be ``old`` renamed: same kind, and same provides when known."""
    if old.atom_type != new["kind"]:
        return False
    before = recorded.get(old.name) if recorded is not None else None
    return before is None or sorted(before["provides"]) == new["provides"]


# -- migrations ----------------------------------------------------------------------------


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("Migration(%s=...) takes a list of atom names, not the string %r" % (what, value))
    names = tuple(value or ())
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError("Migration(%s=...): atom names are non-empty strings, got %r" % (what, name))
    return names


@dataclasses.dataclass(frozen=True, init=False)
class Migration:
    """What to do with a logbook whose flow's code changed (see the module docstring).

    ``rename``: ``{old atom name: new atom name}``, the atom detail is renamed
    and keeps its state and result; ``drop``: atoms the code no longer has,
    whose atom details are retired as they are; ``rerun``: atoms of the new
    code that run again (their recorded result is forgotten).  Applied by
    ``load_from_detail(..., migrate=...)`` and ``flowkit resume --rename
    OLD=NEW --drop NAME --rerun NAME`` before the flow is checked, and
    recorded in the flow detail's ``meta["changes"]``.
    """

    rename: Mapping[str, str]
    drop: tuple[str, ...]
    rerun: tuple[str, ...]

    def __init__(
        self,
        rename: Mapping[str, str] | None = None,
        drop: Iterable[str] | None = None,
        rerun: Iterable[str] | None = None,
    ) -> None:
        renames = dict(rename or {})
        for old, new in renames.items():
            if not isinstance(old, str) or not isinstance(new, str) or not old or not new:
                raise TypeError("Migration(rename=...) maps atom names to atom names, got %r: %r" % (old, new))
            if old == new:
                raise ValueError("Migration(rename=...) renames %r to itself" % (old,))
        targets = list(renames.values())
        if len(set(targets)) != len(targets):
            raise ValueError("Migration(rename=...) gives two atoms the same new name: %r" % (renames,))
        object.__setattr__(self, "rename", renames)
        object.__setattr__(self, "drop", _names(drop, "drop"))
        object.__setattr__(self, "rerun", _names(rerun, "rerun"))

    def __bool__(self) -> bool:
        return bool(self.rename or self.drop or self.rerun)

    def then(self, other: Migration) -> Migration:
        """This migration followed by ``other`` (a rename chain ``a -> b``, ``b -> c`` becomes ``a -> c``)."""
        rename = dict(self.rename)
        for old, new in other.rename.items():
            sources = [k for k, v in rename.items() if v == old]
            if sources:
                for source in sources:
                    rename[source] = new
            else:
                rename[old] = new
        rename = {k: v for k, v in rename.items() if k != v}
        drop = [*self.drop, *(n for n in other.drop if n not in self.drop)]
        rerun = [*self.rerun, *(n for n in other.rerun if n not in self.rerun)]
        return Migration(rename=rename, drop=drop, rerun=rerun)

    def to_data(self) -> dict[str, Any]:
        """The migration as JSON data (what the change record holds)."""
        return {"rename": dict(self.rename), "drop": list(self.drop), "rerun": list(self.rerun)}


def apply_migration(migration: Migration, compilation: Compilation, flow_detail: FlowDetail) -> list[Difference]:
    """Apply ``migration`` to ``flow_detail``'s atom details in memory; what it did, as differences.

    Raises ValueError naming the flow and the atom when the migration does not
    fit the flow detail or the code (an atom to rename that has no detail,
    a name the code does not have, ...).  Checked in full before anything is
    changed, so a refused migration changes nothing.
    """
    where = "flow %r (%s)" % (flow_detail.name, flow_detail.uuid)
    details = {ad.name: ad for ad in flow_detail}
    names = compilation.names
    for old, new in migration.rename.items():
        if old not in details:
            raise ValueError("%s: cannot rename atom %r: the logbook has no atom of that name" % (where, old))
        if new not in names:
            raise ValueError("%s: cannot rename atom %r to %r: the flow has no atom %r" % (where, old, new, new))
        if new in details and new not in migration.rename:
            raise ValueError(
                "%s: cannot rename atom %r to %r: the logbook has an atom %r already" % (where, old, new, new)
            )
    renamed = {migration.rename.get(n, n) for n in details}
    for name in migration.drop:
        if name not in details:
            raise ValueError("%s: cannot drop atom %r: the logbook has no atom of that name" % (where, name))
        if name in names and name not in migration.rename:
            raise ValueError("%s: cannot drop atom %r: the flow still has it (rerun runs it again)" % (where, name))
    for name in migration.rerun:
        if name not in names:
            raise ValueError("%s: cannot re-run atom %r: the flow has no atom of that name" % (where, name))
    done: list[Difference] = []
    for old, new in migration.rename.items():
        details[old].name = new
        done.append(Difference("renamed", (new, old), True, "atom %r was renamed to %r (migration)" % (old, new)))
    for name in migration.drop:
        ad = details[name]
        ad.meta[DROPPED_KEY] = {"state": str(ad.state), "at": _now()}
        ad.state = states.IGNORE
        ad.intention = states.IGNORE
        done.append(Difference("dropped", (name,), True, "atom %r was dropped (migration)" % (name,)))
    for name in migration.rerun:
        found = flow_detail.find_by_name(name) if name in renamed else None
        if found is not None and found.state != states.PENDING:
            found.reset(states.PENDING)
        done.append(Difference("rerun", (name,), True, "atom %r runs again (migration)" % (name,)))
    return done


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def check_resume(
    compilation: Compilation, flow_detail: FlowDetail, migration: Migration | None = None
) -> list[Difference]:
    """Apply ``migration``, then refuse incompatible differences; record what was accepted.

    Raises :class:`~flowkit.exceptions.FlowChanged` listing every
    incompatible difference (the flow detail is then left as it was), or
    ValueError for a migration that does not fit.  Otherwise the flow detail
    is changed in memory -- the migration applied, versions of atoms that
    will run brought up to date, ``meta["structure"]`` replaced by the new
    structure and a record of the change added to ``meta["changes"]`` -- and
    the caller writes it in one transaction (when ``meta["structure"]``
    changed).  Returns the differences accepted.
    """
    migration = migration or Migration()
    if not migration and len(flow_detail) == 0 and STRUCTURE_KEY not in flow_detail.meta:
        # Never prepared (a job just posted): nothing ran, so there is nothing to compare.
        flow_detail.meta[STRUCTURE_KEY] = fingerprint(compilation)
        return []
    if not migration and _recorded_digest(flow_detail) == fingerprint(compilation)["digest"]:
        if all(atom.name in {ad.name for ad in flow_detail} for atom in compilation.atoms):
            return []
    snapshot = [(ad, ad.copy()) for ad in flow_detail]
    applied = apply_migration(migration, compilation, flow_detail) if migration else []
    found = compare(compilation, flow_detail)
    refused = [d for d in found if not d.compatible]
    if refused:
        for ad, before in snapshot:  # leave the flow detail as it was read
            for field in dataclasses.fields(AtomDetail):
                setattr(ad, field.name, getattr(before, field.name))
        hints = []
        if migration:
            hints.append("(after the migration %s)" % (json.dumps(migration.to_data(), sort_keys=True),))
        hints.append(
            "Resume with a migration that says what to do (load_from_detail(..., migrate=Migration(rename=..., "
            "drop=..., rerun=...)) or 'flowkit resume --rename OLD=NEW --drop NAME --rerun NAME %s'), or see "
            "'flowkit plan %s'." % (flow_detail.uuid, flow_detail.uuid)
        )
        raise exc.FlowChanged(flow_detail.name, flow_detail.uuid, [d.text for d in refused], hints)
    everything = applied + found
    by_name = {ad.name: ad for ad in flow_detail}
    for atom in compilation.atoms:
        pending = by_name.get(atom.name)
        if pending is not None and pending.state == states.PENDING:
            pending.version = tuple(atom.version)[:2]  # type: ignore[assignment]
    previous = _recorded_digest(flow_detail)
    new = fingerprint(compilation)
    flow_detail.meta[STRUCTURE_KEY] = new
    if everything or previous is not None:
        history = flow_detail.meta.get(CHANGES_KEY)
        records = list(history) if isinstance(history, list) else []
        records.append(
            {
                "at": _now(),
                "from": previous,
                "to": new["digest"],
                "differences": [d.to_data() for d in everything],
                "migration": migration.to_data() if migration else None,
            }
        )
        flow_detail.meta[CHANGES_KEY] = records[-MAX_CHANGE_RECORDS:]
    return everything
