"""The persistence backend contract as a pytest suite.

Run it against a backend by subclassing :class:`PersistenceBackendTests` in
a test module and providing a ``backend`` fixture that yields a fresh,
empty backend and closes it afterwards::

    import pytest
    from flowkit.testing.persistence import PersistenceBackendTests

    class TestMyBackend(PersistenceBackendTests):
        @pytest.fixture
        def backend(self, tmp_path):
            backend = MyBackend(tmp_path / "store")
            yield backend
            backend.close()

Every test reads through a *new* connection what another connection wrote,
so a backend that only keeps records in one connection fails.  Records are
compared through :func:`flowkit.persistence.models.to_data`, which is what a
backend must store and give back unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flowkit import exceptions as exc
from flowkit import states
from flowkit.persistence.base import Backend, Connection
from flowkit.persistence.models import FlowDetail, LogBook, RetryDetail, TaskDetail, to_data
from flowkit.task import Task
from flowkit.types.failure import Failure

__all__ = ["PersistenceBackendTests", "sample_logbook", "same_records"]


class _SampleError(ValueError):
    """The exception captured in the sample logbook's failures."""


def _failure(message: str) -> Failure:
    try:
        raise _SampleError(message)
    except _SampleError:
        return Failure()


def sample_logbook(name: str = "book") -> LogBook:
    """A logbook with two flow details whose atoms use every field, including failures."""
    book = LogBook(name=name)
    book.meta = {"owner": "tests", "nested": {"list": [1, 2.5, None, True, "ü€"]}}
    first = FlowDetail(name="first")
    first.state = states.RUNNING
    first.meta = {"store": {"x": 1, "y": [1, 2]}, "factory": {"path": "pkg.mod:make"}}
    done = TaskDetail("done")
    done.state = states.SUCCESS
    done.results = {"answer": 42, "items": ["a", "b"], "ratio": 0.25}
    done.version = (1, 2)
    done.meta = {"progress": 1.0}
    failed = TaskDetail("failed")
    failed.state = states.FAILURE
    failed.failure = _failure("it broke: x" * 3)
    reverted = TaskDetail("reverted")
    reverted.state = states.REVERT_FAILURE
    reverted.intention = states.REVERT
    reverted.results = "was here"
    reverted.revert_results = {"undone": False}
    reverted.revert_failure = _failure("revert broke")
    retry = RetryDetail("retry")
    retry.state = states.RETRYING
    retry.results = [[1, {}], [2, {"failed": _failure("attempt 2")}]]
    for detail in (done, failed, reverted, retry):
        first.add(detail)
    second = FlowDetail(name="second")
    second.add(TaskDetail("pending"))
    book.add(first)
    book.add(second)
    return book


def same_records(left: Any, right: Any) -> None:
    """Assert two records (with children) store the same data; Failures compared by what they keep."""
    assert _comparable(to_data(left)) == _comparable(to_data(right))


def _comparable(data: Any) -> Any:
    # Children are compared by uuid, not by the order a backend returns them in;
    # a logbook's updated_at is the backend's to set.
    if isinstance(data, dict):
        out = {k: _comparable(v) for k, v in data.items() if k != "updated_at"}
        for key in ("atoms", "flows"):
            if key in out:
                out[key] = sorted(out[key], key=lambda d: d["uuid"])
        return out
    if isinstance(data, list):
        return [_comparable(v) for v in data]
    return data


class PersistenceBackendTests:
    """The contract tests; subclass and provide a ``backend`` fixture (fresh, empty, closed after)."""

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        """Override: yield a fresh, empty backend and close it afterwards."""
        raise NotImplementedError("define a 'backend' fixture in your subclass of PersistenceBackendTests")
        yield  # pragma: no cover

    @pytest.fixture
    def conn(self, backend: Backend) -> Iterator[Connection]:
        """A connection with the schema in place."""
        with backend.get_connection() as conn:
            conn.upgrade()
            yield conn

    def reader(self, backend: Backend) -> Connection:
        """A new connection, to check what was written is visible to others."""
        return backend.get_connection()

    # -- schema ---------------------------------------------------------------------

    def test_upgrade_is_idempotent_and_validates(self, backend: Backend) -> None:
        with backend.get_connection() as conn:
            conn.upgrade()
            conn.upgrade()
            conn.validate()

    # -- logbooks -------------------------------------------------------------------

    def test_saved_logbook_reads_back_whole(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        with self.reader(backend) as other:
            same_records(other.get_logbook(book.uuid), book)

    def test_failures_keep_type_names_message_and_traceback(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        original = book.find(list(book)[0].uuid).find_by_name("failed").failure  # type: ignore[union-attr]
        assert original is not None
        with self.reader(backend) as other:
            fd = other.get_flow_details(list(book)[0].uuid)
        failure = fd.find_by_name("failed").failure  # type: ignore[union-attr]
        assert isinstance(failure, Failure)
        assert failure.exception_str == original.exception_str
        assert "_SampleError" in failure.traceback_str and "raise _SampleError" in failure.traceback_str
        assert failure.check(ValueError) is not None
        assert failure.exc_type_names == original.exc_type_names
        retry = fd.find_by_name("retry")
        assert isinstance(retry.results[1][1]["failed"], Failure)  # type: ignore[union-attr]

    def test_saving_again_updates(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        book.meta["more"] = True
        extra = FlowDetail(name="third")
        extra.add(TaskDetail("new"))
        book.add(extra)
        conn.save_logbook(book)
        with self.reader(backend) as other:
            same_records(other.get_logbook(book.uuid), book)

    def test_get_logbooks_lists_every_book(self, backend: Backend, conn: Connection) -> None:
        books = [sample_logbook("a"), sample_logbook("b"), LogBook(name="empty")]
        for book in books:
            conn.save_logbook(book)
        with self.reader(backend) as other:
            found = {b.uuid: b for b in other.get_logbooks()}
            assert set(found) == {b.uuid for b in books}
            for book in books:
                same_records(found[book.uuid], book)
            assert {b.uuid for b in other.get_logbooks(lazy=True)} == set(found)

    def test_flows_for_book(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        with self.reader(backend) as other:
            flows = {fd.uuid: fd for fd in other.get_flows_for_book(book.uuid)}
        assert set(flows) == {fd.uuid for fd in book}
        for fd in book:
            same_records(flows[fd.uuid], fd)

    def test_missing_things_raise_not_found(self, conn: Connection) -> None:
        with pytest.raises(exc.NotFound):
            conn.get_logbook("no-such-book")
        with pytest.raises(exc.NotFound):
            conn.get_flow_details("no-such-flow")
        with pytest.raises(exc.NotFound):
            conn.get_atom_details("no-such-atom")
        with pytest.raises(exc.NotFound):
            list(conn.get_flows_for_book("no-such-book"))
        with pytest.raises(exc.NotFound):
            conn.destroy_logbook("no-such-book")
        with pytest.raises(exc.NotFound):
            conn.update_flow_details(FlowDetail(name="never-saved"))
        with pytest.raises(exc.NotFound):
            conn.update_flow_state(FlowDetail(name="never-saved"))
        with pytest.raises(exc.NotFound):
            conn.update_atom_details(TaskDetail("never-saved"))
        with pytest.raises(exc.NotFound):
            conn.get_atom_states("no-such-flow")

    # -- updates ----------------------------------------------------------------------

    def test_atom_updates_are_visible_after_flush(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[1]
        ad = fd.find_by_name("pending")
        assert ad is not None
        ad.state = states.RUNNING
        conn.update_atom_details(ad)
        ad.state = states.SUCCESS
        ad.results = {"n": 1}
        conn.update_atom_details(ad)
        conn.flush()
        with self.reader(backend) as other:
            same_records(other.get_atom_details(ad.uuid), ad)
            same_records(other.get_flow_details(fd.uuid), fd)

    def test_common_metas_and_results_read_back_with_their_types(self, backend: Backend, conn: Connection) -> None:
        # Backends may write the commonest values (an int result, an empty
        # meta, a finished task's progress) without encoding them: 1, 1.0 and
        # True are equal in Python, so each is checked for its type too.
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[1]
        ad = fd.find_by_name("pending")
        assert ad is not None
        cases: list[tuple[Any, Any]] = [
            ({"progress": 1.0}, 1),
            ({"progress": 1}, True),
            ({"progress": True}, 2**60),
            ({}, -7),
            ({"progress": 1.0, "details": [1, 2.5]}, 1.0),
            ({"progress": 0.5}, "1"),
        ]
        for meta, result in cases:
            ad.state = states.SUCCESS
            ad.meta = meta
            ad.results = result
            conn.update_atom_details(ad)
            conn.flush()
            with self.reader(backend) as other:
                back = other.get_atom_details(ad.uuid)
            assert back.meta == meta and back.results == result
            assert [type(v) for v in back.meta.values()] == [type(v) for v in meta.values()], meta
            assert type(back.results) is type(result), result

    def test_flow_updates_store_state_meta_and_new_atoms(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        fd.state = states.SUCCESS
        fd.meta["regions"] = [{"retry": None, "outcome": "REVERT_ALL"}]
        added = TaskDetail("added")
        fd.add(added)
        conn.update_flow_details(fd)
        added.state = states.SUCCESS
        conn.update_atom_details(added)
        conn.flush()
        with self.reader(backend) as other:
            same_records(other.get_flow_details(fd.uuid), fd)

    def test_flow_update_stores_atoms_changed_in_place(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        done = fd.find_by_name("done")
        assert done is not None
        done.results["items"].append("c")
        done.meta["progress"] = 0.5
        conn.update_flow_details(fd)
        conn.flush()
        with self.reader(backend) as other:
            same_records(other.get_flow_details(fd.uuid), fd)

    def test_flow_state_updates_store_state_and_meta(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        fd.state = states.REVERTING
        fd.meta["regions"] = [{"retry": None, "outcome": "REVERT_ALL"}]
        conn.update_flow_state(fd)
        fd.state = states.REVERTED
        conn.update_flow_state(fd)
        conn.flush()
        with self.reader(backend) as other:
            stored = other.get_flow_details(fd.uuid)
        assert stored.state == states.REVERTED
        assert stored.meta == fd.meta
        assert [(ad.uuid, ad.name) for ad in stored] == [(ad.uuid, ad.name) for ad in fd]

    def test_a_flow_structure_written_again_or_replaced_reads_back_as_last_written(
        self, backend: Backend, conn: Connection
    ) -> None:
        book = sample_logbook()
        fd = list(book)[0]
        first = {"format": 1, "digest": "d1", "count": 2, "atoms": [{"name": "a", "version": [1, 0]}, {"name": "b"}]}
        fd.meta["structure"] = first
        conn.save_logbook(book)
        for state in (states.RUNNING, states.SUCCESS):  # the same structure, written at each state change
            fd.state = state
            conn.update_flow_state(fd)
            conn.flush()
        with self.reader(backend) as other:
            assert other.get_flow_details(fd.uuid).meta == fd.meta
        # Replaced (flowkit.versioning never changes one in place): the new one is what is read.
        fd.meta = {"structure": {"format": 1, "digest": "d2", "count": 1, "atoms": [{"name": "a"}]}}
        conn.update_flow_state(fd)
        conn.flush()
        with self.reader(backend) as other:
            assert other.get_flow_details(fd.uuid).meta == fd.meta
        fd.meta["structure"] = first
        fd.meta["other"] = {"x": [1, "ü"]}
        conn.update_flow_state(fd)
        conn.flush()
        with self.reader(backend) as other:
            assert other.get_flow_details(fd.uuid).meta == {"structure": first, "other": {"x": [1, "ü"]}}

    def test_atom_states_are_what_was_stored(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[1]
        ad = fd.find_by_name("pending")
        assert ad is not None
        ad.state = states.REVERTING
        ad.intention = states.REVERT
        conn.update_atom_details(ad)
        conn.flush()
        with self.reader(backend) as other:
            found = other.get_atom_states(fd.uuid)
        assert found == {a.name: (a.uuid, a.state, a.intention) for a in fd}
        assert found["pending"] == (ad.uuid, states.REVERTING, states.REVERT)

    def test_large_values_round_trip(self, backend: Backend, conn: Connection) -> None:
        book = LogBook(name="big")
        fd = FlowDetail(name="big")
        ad = TaskDetail("big")
        fd.add(ad)
        book.add(fd)
        conn.save_logbook(book)
        ad.state = states.FAILURE
        ad.results = {"blob": "x" * (3 * 1024 * 1024), "rows": list(range(50_000))}
        try:
            raise RuntimeError("long\n" + "traceback line\n" * 20_000)
        except RuntimeError:
            ad.failure = Failure()
        conn.update_atom_details(ad)
        conn.flush()
        with self.reader(backend) as other:
            got = other.get_atom_details(ad.uuid)
        assert got.results == ad.results
        assert got.failure is not None and got.failure.exception_str == ad.failure.exception_str

    def test_max_value_bytes_is_kept(self, backend: Backend, conn: Connection) -> None:
        limit = backend.max_value_bytes
        assert limit is None or (type(limit) is int and limit > 0), limit
        book = LogBook(name="limit")
        fd = FlowDetail(name="limit")
        ad = TaskDetail("limit")
        fd.add(ad)
        book.add(fd)
        conn.save_logbook(book)
        # A value within the limit (capped so the suite stays quick) is stored whole.
        fitting = min(limit - 2, 2 * 1024 * 1024) if limit is not None else 2 * 1024 * 1024
        ad.state = states.SUCCESS
        ad.results = "v" * fitting
        conn.update_atom_details(ad)
        conn.flush()
        with self.reader(backend) as other:
            assert other.get_atom_details(ad.uuid).results == ad.results
        if limit is None or limit > 64 * 1024 * 1024:
            return
        # One over the limit is refused when it is handed over, before anything is written.
        ad.results = "w" * (limit - 1)
        with pytest.raises(exc.ResultNotStorable, match="limit"):
            conn.update_atom_details(ad)
        conn.flush()
        with self.reader(backend) as other:
            assert other.get_atom_details(ad.uuid).results == "v" * fitting

    # -- deleting ---------------------------------------------------------------------------

    def test_destroy_logbook_removes_its_flows_and_atoms(self, backend: Backend, conn: Connection) -> None:
        book, keep = sample_logbook("gone"), sample_logbook("kept")
        conn.save_logbook(book)
        conn.save_logbook(keep)
        conn.destroy_logbook(book.uuid)
        with self.reader(backend) as other:
            with pytest.raises(exc.NotFound):
                other.get_logbook(book.uuid)
            for fd in book:
                with pytest.raises(exc.NotFound):
                    other.get_flow_details(fd.uuid)
                for ad in fd:
                    with pytest.raises(exc.NotFound):
                        other.get_atom_details(ad.uuid)
            same_records(other.get_logbook(keep.uuid), keep)

    def test_has_flow_detail_follows_saves_and_deletes(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        fd = list(book)[0]
        assert not conn.has_flow_detail(fd.uuid)
        conn.save_logbook(book)
        assert conn.has_flow_detail(fd.uuid)
        with self.reader(backend) as other:
            assert other.has_flow_detail(fd.uuid)
            other.get_logbook(book.uuid)
            conn.destroy_logbook(book.uuid)
            assert not other.has_flow_detail(fd.uuid)
        assert not conn.has_flow_detail(fd.uuid)

    def test_clear_all(self, backend: Backend, conn: Connection) -> None:
        for name in ("a", "b"):
            conn.save_logbook(sample_logbook(name))
        conn.clear_all()
        with self.reader(backend) as other:
            assert list(other.get_logbooks()) == []

    def test_saving_a_destroyed_logbook_again_stores_it_whole(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        conn.destroy_logbook(book.uuid)
        conn.save_logbook(book)
        with self.reader(backend) as other:
            same_records(other.get_logbook(book.uuid), book)

    # -- creating only once ------------------------------------------------------------------

    def test_create_logbook_stores_it_once(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        assert conn.create_logbook(book) is True
        with self.reader(backend) as other:
            same_records(other.get_logbook(book.uuid), book)
            # A second creation, even of changed records, leaves what is stored alone.
            changed = sample_logbook("changed")
            changed.uuid = book.uuid
            assert other.create_logbook(changed) is False
        with self.reader(backend) as other:
            same_records(other.get_logbook(book.uuid), book)

    def test_create_logbook_refuses_a_taken_flow_detail_uuid(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        other_book = LogBook(name="other")
        other_book.add(FlowDetail(name="same uuid", uuid=list(book)[0].uuid))
        assert conn.create_logbook(other_book) is False
        with self.reader(backend) as other:
            with pytest.raises(exc.NotFound):
                other.get_logbook(other_book.uuid)
            same_records(other.get_logbook(book.uuid), book)

    def test_create_logbook_has_one_winner_among_threads(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        barrier = threading.Barrier(6)
        outcomes: list[Any] = []
        guard = threading.Lock()

        def create(name: str) -> None:
            mine = sample_logbook(name)
            mine.uuid = book.uuid
            for fd, theirs in zip(mine, book):
                fd.uuid = theirs.uuid
            try:
                with backend.get_connection() as own:
                    barrier.wait(30)
                    outcome: Any = (own.create_logbook(mine), name)
            except BaseException as error:  # reported to the test thread
                outcome = error
            with guard:
                outcomes.append(outcome)

        threads = [threading.Thread(target=create, args=("book-%d" % i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(outcomes) == 6 and all(isinstance(o, tuple) for o in outcomes), outcomes
        winners = [name for created, name in outcomes if created]
        assert len(winners) == 1
        with self.reader(backend) as other:
            assert other.get_logbook(book.uuid).name == winners[0]

    # -- signals -----------------------------------------------------------------------------

    def test_signals_are_stored_and_read_back(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        first, second = list(book)
        value = {"by": "ann", "steps": [1, 2.5, None, True, "ü€"], "nested": {"ok": False}}
        assert conn.send_signal(first.uuid, "approved", value) is True
        assert conn.send_signal(first.uuid, "poked", None) is True
        assert conn.send_signal(second.uuid, "approved", [1]) is True
        with self.reader(backend) as other:
            assert other.get_signals(first.uuid) == {"approved": value, "poked": None}
            assert other.get_signals(first.uuid, ["poked", "never-sent"]) == {"poked": None}
            assert other.get_signals(first.uuid, []) == {}
            assert other.get_signals(second.uuid) == {"approved": [1]}
            assert other.get_signals("no-such-flow") == {}

    def test_a_signal_needs_a_stored_flow_detail(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        with pytest.raises(exc.NotFound, match=list(book)[0].uuid):
            conn.send_signal(list(book)[0].uuid, "approved", 1)
        conn.save_logbook(book)  # sent before the flow detail existed: nothing was kept
        with self.reader(backend) as other:
            assert other.get_signals(list(book)[0].uuid) == {}

    def test_a_name_is_delivered_once(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        assert conn.send_signal(fd.uuid, "approved", "first", "key-1", sent_at=0.0) is True
        for key in (None, "key-2"):
            with pytest.raises(exc.SignalAlreadySent) as raised:
                conn.send_signal(fd.uuid, "approved", "second", key)
            message = str(raised.value)
            assert fd.uuid in message and "'approved'" in message and "1970-01-01T00:00:00" in message
        conn.send_signal(fd.uuid, "unkeyed", 1)
        with pytest.raises(exc.SignalAlreadySent, match="unkeyed"):
            conn.send_signal(fd.uuid, "unkeyed", 1)
        with self.reader(backend) as other:
            assert other.get_signals(fd.uuid) == {"approved": "first", "unkeyed": 1}

    def test_the_same_idempotency_key_again_is_a_no_op(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        assert conn.send_signal(fd.uuid, "approved", {"n": 1}, "key-1") is True
        with self.reader(backend) as other:
            assert other.send_signal(fd.uuid, "approved", {"n": 2}, "key-1") is False
            (seq, _, _), *more = other.signals_after(0)
            assert more == []
            assert other.get_signals(fd.uuid) == {"approved": {"n": 1}}

    def test_a_signal_is_committed_apart_from_buffered_writes(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[1]
        ad = fd.find_by_name("pending")
        assert ad is not None
        ad.state = states.RUNNING
        conn.update_atom_details(ad)  # buffered until a flush, on a backend that buffers
        conn.send_signal(fd.uuid, "approved", True)
        with self.reader(backend) as other:
            assert other.get_signals(fd.uuid) == {"approved": True}
            if not conn.writes_immediately:
                assert conn.pending
                assert other.get_atom_details(ad.uuid).state == states.PENDING

    def test_signals_after_lists_them_in_order(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        first, second = list(book)
        sent = [(first.uuid, "a"), (second.uuid, "a"), (first.uuid, "b"), (second.uuid, "c")]
        for fd_uuid, name in sent:
            conn.send_signal(fd_uuid, name, name)
        with self.reader(backend) as other:
            listed = other.signals_after(0)
            assert [(fd_uuid, name) for _, fd_uuid, name in listed] == sent
            seqs = [seq for seq, _, _ in listed]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and all(type(s) is int for s in seqs)
            assert other.signals_after(seqs[1]) == listed[2:]
            assert other.signals_after(seqs[0], limit=2) == listed[1:3]
            assert other.signals_after(seqs[-1]) == []

    def test_sequence_numbers_are_not_reused_after_a_delete(self, backend: Backend, conn: Connection) -> None:
        book, later = sample_logbook("gone"), sample_logbook("later")
        conn.save_logbook(book)
        conn.save_logbook(later)
        conn.send_signal(list(book)[0].uuid, "a", 1)
        conn.send_signal(list(book)[1].uuid, "a", 1)
        ((last, _, _),) = conn.signals_after(0)[-1:]
        conn.destroy_logbook(book.uuid)
        conn.send_signal(list(later)[0].uuid, "a", 1)
        ((seq, fd_uuid, _),) = conn.signals_after(last)
        assert seq > last and fd_uuid == list(later)[0].uuid

    def test_destroy_logbook_and_clear_all_remove_signals(self, backend: Backend, conn: Connection) -> None:
        book, keep = sample_logbook("gone"), sample_logbook("kept")
        conn.save_logbook(book)
        conn.save_logbook(keep)
        for fd in (*book, *keep):
            conn.send_signal(fd.uuid, "approved", fd.name)
        conn.destroy_logbook(book.uuid)
        with self.reader(backend) as other:
            for fd in book:
                assert other.get_signals(fd.uuid) == {}
            assert {fd_uuid for _, fd_uuid, _ in other.signals_after(0)} == {fd.uuid for fd in keep}
        conn.save_logbook(book)  # the same flow details again: they start without signals
        fd = list(book)[0]
        assert conn.get_signals(fd.uuid) == {}
        assert conn.send_signal(fd.uuid, "approved", "again") is True
        conn.clear_all()
        with self.reader(backend) as other:
            assert other.signals_after(0) == []
            assert other.get_signals(fd.uuid) == {}

    @pytest.mark.parametrize("same_key", [False, True], ids=["different-keys", "same-key"])
    def test_concurrent_senders_of_one_name(self, backend: Backend, conn: Connection, same_key: bool) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        senders = 8
        barrier = threading.Barrier(senders)
        outcomes: list[Any] = [None] * senders

        def send(index: int) -> None:
            key = "the-key" if same_key else "key-%d" % index
            try:
                with backend.get_connection() as mine:
                    barrier.wait(30)
                    outcomes[index] = mine.send_signal(fd.uuid, "approved", index, key)
            except BaseException as error:  # reported to the test thread
                outcomes[index] = error

        threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stored = [i for i, outcome in enumerate(outcomes) if outcome is True]
        others = [outcome for outcome in outcomes if outcome is not True]
        assert len(stored) == 1, outcomes
        if same_key:
            assert others == [False] * (senders - 1)
        else:
            assert all(isinstance(outcome, exc.SignalAlreadySent) for outcome in others), outcomes
        with self.reader(backend) as other:
            assert other.get_signals(fd.uuid) == {"approved": stored[0]}
            assert len(other.signals_after(0)) == 1

    # -- one engine per flow detail ----------------------------------------------------------

    def test_flow_lock_excludes_a_second_engine(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        lock = conn.lock_flow(fd)
        try:
            with self.reader(backend) as other:
                with pytest.raises(exc.FlowDetailLocked, match=fd.uuid):
                    other.lock_flow(fd)
                # Another flow detail is not affected.
                other.lock_flow(list(book)[1]).release()
        finally:
            lock.release()
        lock.release()  # idempotent
        with self.reader(backend) as other:
            other.lock_flow(fd).release()

    def test_flow_lock_from_another_thread(self, backend: Backend, conn: Connection) -> None:
        book = sample_logbook()
        conn.save_logbook(book)
        fd = list(book)[0]
        outcome: list[BaseException | None] = []

        def contend() -> None:
            try:
                with backend.get_connection() as other:
                    other.lock_flow(fd).release()
                outcome.append(None)
            except BaseException as error:  # reported to the test thread
                outcome.append(error)

        lock = conn.lock_flow(fd)
        try:
            thread = threading.Thread(target=contend)
            thread.start()
            thread.join(30)
        finally:
            lock.release()
        assert len(outcome) == 1 and isinstance(outcome[0], exc.FlowDetailLocked)

    # -- through the engine -------------------------------------------------------------------

    def test_engine_run_is_recorded(self, backend: Backend) -> None:
        from flowkit import engines
        from flowkit.patterns import linear_flow

        flow = linear_flow.Flow("recorded").add(
            _Plus("one", provides="a"), _Plus("two", provides="b", rebind={"x": "a"})
        )
        engine = engines.load(flow, store={"x": 1}, backend=backend)
        engine.run()
        with backend.get_connection() as other:
            fd = other.get_flow_details(engine.flow_detail.uuid)
        assert fd.state == states.SUCCESS
        assert {ad.name: (ad.state, ad.results) for ad in fd} == {
            "one": (states.SUCCESS, 2),
            "two": (states.SUCCESS, 3),
        }
        assert fd.meta["store"] == {"x": 1}

    def test_engine_resumes_from_the_logbook(self, backend: Backend) -> None:
        from flowkit import engines
        from flowkit.patterns import linear_flow

        def make() -> Any:
            return linear_flow.Flow("resumed").add(
                _Plus("one", provides="a"), _Plus("two", provides="b", rebind={"x": "a"})
            )

        engine = engines.load(make(), store={"x": 1}, backend=backend)
        engine.prepare()
        first = engine.flow_detail.find_by_name("one")
        assert first is not None
        # As if a previous process finished "one" (with a result it could not
        # have computed from x=1) and died: resuming must reuse it.
        first.state = states.SUCCESS
        first.results = 100
        with backend.get_connection() as conn:
            conn.update_atom_details(first)
            conn.flush()
        with backend.get_connection() as conn:
            fd = conn.get_flow_details(engine.flow_detail.uuid)
            book = next(b for b in conn.get_logbooks() if b.find(fd.uuid) is not None)
        resumed = engines.load(make(), backend=backend, book=book, flow_detail=fd)
        resumed.run()
        assert resumed.storage.fetch("b") == 101


class _Plus(Task):
    """``x + 1``."""

    def execute(self, x: int) -> int:
        return x + 1
