"""The journal: one entry per HTTP request the emulator received, for assertions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["JournalEntry"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One request: what came in and the status that went out (0 for a dropped connection)."""

    method: str
    path: str
    headers: dict[str, str]
    body_size: int
    status: int
    at: float
    query: str = ""
    endpoint: str | None = None
    # An accepted batches.create, when the emulator's `journal_batches` is on: the batch id,
    # and each request's custom_id with the TTLs of its cache_control marks as sent, in body order.
    batch_id: str | None = None
    batch_requests: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (as `GET /_emulator/journal` returns it)."""
        return asdict(self)
