"""Small SQL helpers shared by the store's modules."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pydantic_core

from ..._crashpoints import crash_point

T = TypeVar("T")

SQL_VARS = 900  # stay under SQLite's default limit of host parameters per statement


def chunks(seq: Sequence[T], size: int = SQL_VARS) -> Iterable[Sequence[T]]:
    """`seq` in slices of at most `size` (for `IN (...)` lists)."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def json_param(rows: Any) -> str:
    """JSON text of plain values (lists, tuples, numbers, strings) for a `json_each(?)` parameter.

    pydantic-core's serializer: ~5x `json.dumps` on ledger rows, and floats keep every bit.
    """
    return pydantic_core.to_json(rows).decode()


def in_transaction(
    c: sqlite3.Connection,
    fn: Callable[..., T],
    *args: Any,
    crash_before_commit: str | None = None,
    **kwargs: Any,
) -> T:
    """`fn(c, *args, **kwargs)` inside BEGIN IMMEDIATE ... COMMIT, rolled back on any error.

    For functions run whole on the writer's thread (`Store._on_writer_thread`).
    """
    c.execute("BEGIN IMMEDIATE")
    try:
        result = fn(c, *args, **kwargs)
        if crash_before_commit is not None:
            crash_point(crash_before_commit)
        c.execute("COMMIT")
    except BaseException:
        rollback_quietly(c)
        raise
    return result


def rollback_quietly(c: sqlite3.Connection) -> None:
    """Roll back after an error, if a transaction is still open (a failed COMMIT may have
    ended it), without hiding the error that got us here."""
    if c.in_transaction:
        try:
            c.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# A request's result line, in a SELECT ... FROM requests: lines live in `results`, keyed by
# done_seq; the oldest rows keep theirs inline in requests.result.
RESULT_OF_REQUEST = (
    "COALESCE((SELECT line FROM results WHERE results.done_seq = requests.done_seq), requests.result)"
)
RESULT_INSERT = "INSERT INTO results (done_seq, line) VALUES (?, ?)"
# The completion number to give next, past those folded into `requests` and those still in
# `completions`; the partial index on done_seq answers the first (without the IS NOT NULL, MAX()
# scans the table), the primary key the second.
NEXT_DONE_SEQ = (
    "SELECT max(COALESCE((SELECT MAX(done_seq) FROM requests WHERE done_seq IS NOT NULL), 0),"
    " COALESCE((SELECT MAX(done_seq) FROM completions), 0)) + 1"
)


def not_completed(requests: str = "requests") -> str:
    """SQL true when the request (`requests`: the table or its alias in the statement) has no
    completion. One with a completion not yet folded into its row is final: the
    guard of every read and write that takes a submitted request for unanswered."""
    return f"NOT EXISTS (SELECT 1 FROM completions WHERE completions.request_id = {requests}.id)"


NOT_COMPLETED = not_completed()
