"""Directory backend: logbooks as JSON files in a folder (TaskFlow's ``dir://`` / ``file://`` backend).

``fetch({"connection": "dir:///var/lib/app/flows"})`` (or ``file://``, or
``{"connection": "dir://", "path": "..."}``) keeps each logbook, with its
flow and atom details, in ``<path>/logbooks/<uuid>.json`` and the signals in
``<path>/signals.json``.  It suits examples, tests and small single-host
deployments that want resumption without a database; every write rewrites
its logbook's file, so for large flows or many processes use the SQL
backend.

How it stays right across processes:

- Every read and write holds an exclusive ``flock`` on ``<path>/.lock``;
  a write replaces whole files atomically (written beside, fsynced, then
  renamed), then bumps ``<path>/generation``.  A process rereads the files
  only when the generation it read last has changed.
- An engine driving a flow detail holds an ``flock`` on
  ``<path>/locks/<flow detail uuid>.lock`` (a file lock per flow detail),
  which the operating system drops when the process dies, so a crashed
  engine never blocks the resume.

Files hold JSON data only, decoded with :mod:`flowkit.persistence.codec`;
nothing read from them names code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flowkit.exceptions import CorruptLogbook, FlowDetailLocked, StorageFailure
from flowkit.persistence import codec
from flowkit.persistence.backends.impl_memory import MemoryBackend, MemoryConnection
from flowkit.persistence.base import DEFAULT_MAX_RESULT_BYTES, FlowLock, ProcessFlowLock
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook, logbook_from_data, to_data

__all__ = ["DirBackend", "DirConnection"]

_FORMAT = 1
_SCHEMES = ("dir", "file")


def _path_from(conf: Mapping[str, Any] | str | os.PathLike[str]) -> Path:
    if isinstance(conf, os.PathLike):
        return Path(conf)
    if isinstance(conf, str):
        conf = {"connection": conf} if "://" in conf else {"path": conf}
    path = conf.get("path")
    url = conf.get("connection")
    if not path and isinstance(url, str) and "://" in url:
        scheme, rest = url.split("://", 1)
        if scheme.lower() not in _SCHEMES:
            raise ValueError("a directory backend needs a dir:// or file:// URL, got %r" % (url,))
        path = rest
    if not isinstance(path, str) or not path:
        raise ValueError(
            "a directory backend needs a folder: 'dir:///path/to/folder', or a conf with 'path', got %r" % (conf,)
        )
    return Path(path)


class _DirFlowLock(FlowLock):
    """An ``flock`` on the flow detail's own lock file, plus the in-process lock."""

    def __init__(self, process_lock: ProcessFlowLock, handle: int) -> None:
        self._process_lock = process_lock
        self._handle: int | None = handle

    def release(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            os.close(handle)  # drops the flock
            self._process_lock.release()


class DirBackend(MemoryBackend):
    """Logbooks in JSON files under one folder; see the module docstring.

    ``conf`` is the folder (a path), a ``dir://``/``file://`` URL, or a conf
    dict with ``"path"`` or such a ``"connection"``.  The folder is created
    when missing.
    """

    def __init__(
        self,
        conf: Mapping[str, Any] | str | os.PathLike[str],
        *,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        super().__init__(dict(conf) if isinstance(conf, Mapping) else None, max_result_bytes=max_result_bytes)
        self.path = _path_from(conf).expanduser().absolute()
        self._books_dir = self.path / "logbooks"
        self._locks_dir = self.path / "locks"
        self._depth = 0
        self._touched: set[str] = set()
        self._signals_touched = False
        self._generation: str | None = None
        self._thread_lock = threading.RLock()
        self._make_folders()

    def _make_folders(self) -> None:
        try:
            self._books_dir.mkdir(parents=True, exist_ok=True)
            self._locks_dir.mkdir(exist_ok=True)
        except OSError as error:
            raise StorageFailure("cannot create the logbook folder %s: %s" % (self.path, error)) from error

    def get_connection(self) -> DirConnection:
        return DirConnection(self)

    def __repr__(self) -> str:
        return "<DirBackend %s>" % (self.path,)

    # -- one operation: lock, reread if changed, write what changed ------------------------

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """Hold the folder lock around one connection call (re-entrant); write what it changed at the end."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            handle = self._lock_folder()
            self._depth = 1
            try:
                self._refresh()
                yield
                self._write_changes()
            finally:
                self._depth = 0
                self._touched.clear()
                self._signals_touched = False
                os.close(handle)

    def touched(self, *book_uuids: str, signals: bool = False) -> None:
        """Mark logbooks (and the signals) as changed by the running operation."""
        self._touched.update(book_uuids)
        self._signals_touched = self._signals_touched or signals

    def _lock_folder(self) -> int:
        try:
            handle = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StorageFailure("cannot open the lock of logbook folder %s: %s" % (self.path, error)) from error
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def _read_generation(self) -> str:
        try:
            return (self.path / "generation").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return "0"

    def _refresh(self) -> None:
        generation = self._read_generation()
        if generation == self._generation:
            return
        for table in (self.books, self.book_flows, self.flows, self.flow_atoms, self.atoms, self.signals):
            table.clear()
        self.signal_log = []
        self.signal_seq = 0
        loader = MemoryConnection(self)
        for file in sorted(self._books_dir.glob("*.json")):
            data = self._read_json(file)
            if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("logbook"), dict):
                raise CorruptLogbook("logbook file %s is not a flowkit logbook (format %d)" % (file, _FORMAT))
            loader.save_logbook(logbook_from_data(data["logbook"]))
        signals_file = self.path / "signals.json"
        if signals_file.exists():
            self._load_signals(signals_file, self._read_json(signals_file))
        self._generation = generation

    @staticmethod
    def _read_json(file: Path) -> Any:
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise CorruptLogbook("cannot read %s: %s" % (file, error)) from error

    def _load_signals(self, file: Path, data: Any) -> None:
        try:
            self.signal_seq = int(data["seq"])
            for fd_uuid, held in data["signals"].items():
                for name, (seq, value, key, sent_at) in held.items():
                    self.signals.setdefault(fd_uuid, {})[name] = (int(seq), codec.from_data(value), key, float(sent_at))
                    self.signal_log.append((int(seq), fd_uuid, name))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CorruptLogbook("signals file %s holds something else: %s" % (file, error)) from error
        self.signal_log.sort()

    def _write_changes(self) -> None:
        if not self._touched and not self._signals_touched:
            return
        reader = MemoryConnection(self)
        for book_uuid in self._touched:
            file = self._books_dir / ("%s.json" % (book_uuid,))
            if book_uuid in self.books:
                self._write_json(file, {"format": _FORMAT, "logbook": to_data(reader.get_logbook(book_uuid))})
            else:
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
        if self._signals_touched:
            held = {
                fd_uuid: {name: [seq, codec.to_data(value), key, at] for name, (seq, value, key, at) in named.items()}
                for fd_uuid, named in self.signals.items()
            }
            self._write_json(self.path / "signals.json", {"seq": self.signal_seq, "signals": held})
        current = self._read_generation()
        generation = str(int(current) + 1) if current.isdigit() else "1"
        self._write_text(self.path / "generation", generation)
        self._generation = generation

    def _write_json(self, file: Path, data: Any) -> None:
        self._write_text(file, json.dumps(data, allow_nan=False, separators=(",", ":")))

    @staticmethod
    def _write_text(file: Path, text: str) -> None:
        temporary = file.with_name(file.name + ".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, file)
        except OSError as error:
            raise StorageFailure("cannot write %s: %s" % (file, error)) from error

    def lock_file(self, flow_detail: FlowDetail) -> FlowLock:
        what = "flow detail %r (%s)" % (flow_detail.name, flow_detail.uuid)
        process_lock = ProcessFlowLock("dir:%s:%s" % (self.path, flow_detail.uuid), what)
        try:
            handle = os.open(self._locks_dir / ("%s.lock" % (flow_detail.uuid,)), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            process_lock.release()
            raise StorageFailure("cannot open the lock file of %s: %s" % (what, error)) from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            process_lock.release()
            raise FlowDetailLocked(
                "%s is being run by an engine in another process; wait for it to finish or suspend it" % (what,)
            ) from None
        return _DirFlowLock(process_lock, handle)


class DirConnection(MemoryConnection):
    """A connection to a :class:`DirBackend`: each call is one locked operation on the folder."""

    _backend: DirBackend

    def upgrade(self) -> None:
        self._backend._make_folders()

    def validate(self) -> None:
        if not self._backend.path.is_dir():
            raise StorageFailure("logbook folder %s does not exist" % (self._backend.path,))

    def lock_flow(self, flow_detail: FlowDetail) -> FlowLock:
        return self._backend.lock_file(flow_detail)

    # -- reads ---------------------------------------------------------------------------

    def get_logbook(self, book_uuid: str, lazy: bool = False) -> LogBook:
        with self._backend.operation():
            return super().get_logbook(book_uuid, lazy)

    def get_logbooks(self, lazy: bool = False) -> Iterator[LogBook]:
        with self._backend.operation():
            books = list(super().get_logbooks(lazy))
        yield from books

    def get_flow_details(self, fd_uuid: str, lazy: bool = False) -> FlowDetail:
        with self._backend.operation():
            return super().get_flow_details(fd_uuid, lazy)

    def get_atom_states(self, fd_uuid: str) -> dict[str, tuple[str, Any, Any]]:
        with self._backend.operation():
            return super().get_atom_states(fd_uuid)

    def has_flow_detail(self, fd_uuid: str) -> bool:
        with self._backend.operation():
            return super().has_flow_detail(fd_uuid)

    def get_atom_details(self, ad_uuid: str) -> AtomDetail:
        with self._backend.operation():
            return super().get_atom_details(ad_uuid)

    def get_signals(self, flow_uuid: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        with self._backend.operation():
            return super().get_signals(flow_uuid, names)

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        with self._backend.operation():
            return super().signals_after(seq, limit)

    # -- writes --------------------------------------------------------------------------

    def save_logbook(self, book: LogBook) -> LogBook:
        with self._backend.operation():
            super().save_logbook(book)
            self._backend.touched(book.uuid)
        return book

    def create_logbook(self, book: LogBook) -> bool:
        with self._backend.operation():
            return super().create_logbook(book)

    def update_flow_details(self, flow_detail: FlowDetail) -> FlowDetail:
        with self._backend.operation():
            super().update_flow_details(flow_detail)
            self._backend.touched(self._book_of(flow_detail))
        return flow_detail

    def update_flow_state(self, flow_detail: FlowDetail) -> FlowDetail:
        with self._backend.operation():
            super().update_flow_state(flow_detail)
            self._backend.touched(self._book_of(flow_detail))
        return flow_detail

    def update_atom_details(self, atom_detail: AtomDetail) -> AtomDetail:
        b = self._backend
        with b.operation():
            super().update_atom_details(atom_detail)
            fd_uuid = b.atoms[atom_detail.uuid][0]
            if fd_uuid in b.flows:
                b.touched(b.flows[fd_uuid][0])
        return atom_detail

    def update_atom_details_many(self, atom_details: Iterable[AtomDetail]) -> None:
        with self._backend.operation():  # one rewrite of each logbook for all of them
            for detail in atom_details:
                self.update_atom_details(detail)

    def destroy_logbook(self, book_uuid: str) -> None:
        with self._backend.operation():
            super().destroy_logbook(book_uuid)
            self._backend.touched(book_uuid, signals=True)

    def clear_all(self) -> None:
        b = self._backend
        with b.operation():
            b.touched(*b.books, signals=True)
            super().clear_all()

    def send_signal(
        self,
        flow_uuid: str,
        name: str,
        value: Any,
        idempotency_key: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        with self._backend.operation():
            sent = super().send_signal(flow_uuid, name, value, idempotency_key, sent_at)
            self._backend.touched(signals=True)
            return sent
