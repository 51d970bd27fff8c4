"""The events of the webhook outbox: their names and the data each carries, for both engines.

Each engine writes an event in the transaction of the change it announces (its outbox.py);
what the event says is built here, from the figures the engine read in that transaction.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import pydantic_core

from ..event_names import (
    BATCH_ENDED,
    EVENT_TYPES,
    PER_REQUEST,
    PING,
    REQUEST_COMPLETED,
    REQUEST_ESCALATED,
    REQUEST_FAILED,
    TAG_DRAINED,
)
from .records import OutboxPolicy

__all__ = [
    "BATCH_ENDED",
    "EVENT_TYPES",
    "PER_REQUEST",
    "PING",
    "REQUEST_COMPLETED",
    "REQUEST_ESCALATED",
    "REQUEST_FAILED",
    "TAG_DRAINED",
    "batch_ended",
    "is_keyed",
    "request_escalated",
    "request_final",
    "tag_drained",
    "wants_request",
]

# Keys the router makes up for calls that gave none (client.py); such requests are not "keyed".
GENERATED_KEY_PREFIX: Final = "auto-"


def rfc3339(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def to_json(data: Mapping[str, Any]) -> str:
    return pydantic_core.to_json(data).decode()


def is_keyed(key: str) -> bool:
    return not key.startswith(GENERATED_KEY_PREFIX)


def wants_request(policy: OutboxPolicy, key: str, tag: str | None) -> bool:
    """True when a final request's request.completed/failed event is to be written."""
    if not is_keyed(key):
        return False
    if any(fnmatch.fnmatchcase(key, glob) for glob in policy.request_keys):
        return True
    return tag is not None and any(fnmatch.fnmatchcase(tag, glob) for glob in policy.request_tags)


def _money(policy: OutboxPolicy, ledger: Sequence[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    if policy.costs is None:
        return None, None
    cost, saving = policy.costs(ledger)
    return round(cost, 6), round(saving, 6)


def batch_ended(
    policy: OutboxPolicy,
    *,
    batch_id: int,
    api_id: str | None,
    classes: Sequence[str],
    counts: Mapping[str, int],
    submitted_at: float | None,
    ended_at: float | None,
    turnaround: float | None,
    ledger: Sequence[Mapping[str, Any]],
) -> str:
    """The data of batch.ended: the batch, its class, its results by type, turnaround and cost."""
    cost, saving = _money(policy, ledger)
    return to_json(
        {
            "batch_id": api_id,
            "local_batch_id": batch_id,
            "class": classes[0] if len(classes) == 1 else None,
            "classes": list(classes),
            "counts": dict(counts),
            "requests": sum(counts.values()),
            "submitted_at": rfc3339(submitted_at),
            "ended_at": rfc3339(ended_at),
            "turnaround_seconds": turnaround,
            "cost_usd": cost,
            "saving_usd": saving,
        }
    )


def tag_drained(
    policy: OutboxPolicy,
    *,
    tag: str,
    counts: Mapping[str, int],
    first_submitted_at: float,
    last_submitted_at: float,
    ledger: Sequence[Mapping[str, Any]],
) -> str:
    """The data of tag.drained: the tag's requests since its previous drain, by outcome."""
    cost, saving = _money(policy, ledger)
    return to_json(
        {
            "tag": tag,
            "requests": sum(counts.values()),
            "counts": dict(counts),
            "cost_usd": cost,
            "saving_usd": saving,
            "first_submitted_at": rfc3339(first_submitted_at),
            "last_submitted_at": rfc3339(last_submitted_at),
        }
    )


def request_final(
    *,
    request_id: int,
    key: str,
    tag: str | None,
    latency: str,
    model: str,
    outcome: str | None,
    attempts: int,
) -> str:
    """The data of request.completed / request.failed."""
    return to_json(
        {
            "request_id": request_id,
            "key": key,
            "tag": tag,
            "class": latency,
            "model": model,
            "outcome": outcome,
            "attempts": attempts,
        }
    )


def request_escalated(
    *,
    request_id: int,
    key: str,
    tag: str | None,
    latency: str,
    model: str,
    deadline_at: float | None,
    from_state: str,
) -> str:
    """The data of request.escalated: a deadline sent the request to the real-time lane."""
    return to_json(
        {
            "request_id": request_id,
            "key": key,
            "tag": tag,
            "class": latency,
            "model": model,
            "deadline_at": rfc3339(deadline_at),
            "from_state": from_state,
        }
    )
