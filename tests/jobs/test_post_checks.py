"""``JobBoard.post`` checks its arguments once, for every board: the same post is refused the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.jobs.base import JobBoard


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"priority": "urgent"}, ValueError, "urgent"),
        ({"resources": ["db", ""]}, ValueError, "resource keys are non-empty strings"),
        ({"idempotency_key": ""}, ValueError, "an idempotency key is a string of 1 to"),
        ({"details": {"x": float("nan")}}, ValueError, "not JSON compliant"),
        ({"details": {"x": object()}}, TypeError, "not JSON serializable"),
    ],
)
def test_every_board_refuses_the_same_bad_post(
    any_board: JobBoard, options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        any_board.post("j", **options)  # type: ignore[arg-type]
    assert list(any_board.iterjobs()) == []


def test_only_the_sql_board_takes_a_connection(any_board: JobBoard) -> None:
    if isinstance(any_board, SQLJobBoard):
        with pytest.raises(TypeError, match="takes a SQLAlchemy Connection"):
            any_board.post("j", connection=object())
    else:
        with pytest.raises(TypeError, match="needs the SQL job board"):
            any_board.post("j", connection=object())
    assert list(any_board.iterjobs()) == []


def test_the_sql_board_refuses_keys_its_columns_cannot_hold(tmp_path: Path) -> None:
    with SQLJobBoard("b", "sqlite:///%s" % (tmp_path / "jobs.db")) as board:
        with pytest.raises(ValueError, match="at most 190 characters"):
            board.post("j", resources=["r" * 191])
        with pytest.raises(ValueError, match="1 to 190 characters"):
            board.post("j", idempotency_key="k" * 191)
        assert board.post("j", idempotency_key="k" * 190).idempotency_key == "k" * 190
