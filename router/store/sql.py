"""Small SQL helpers shared by the store's modules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

SQL_VARS = 900  # stay under SQLite's default limit of host parameters per statement


def chunks(seq: Sequence[T], size: int = SQL_VARS) -> Iterable[Sequence[T]]:
    """`seq` in slices of at most `size` (for `IN (...)` lists)."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


LEDGER_INSERT = (
    "INSERT OR IGNORE INTO ledger (at, lane, model, class, tag, request_id, batch_id, result_type,"
    " input_tokens, output_tokens, cache_write_5m, cache_write_1h, cache_read, duplicate)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
