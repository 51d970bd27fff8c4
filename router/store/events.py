"""The events of the webhook outbox: their names and the rows that carry them, for both engines.

Each engine writes an event in the transaction of the change it announces (its outbox.py);
which events are written and the outbox row of each, `OutboxRow`, are built here, from the
figures the engine read in that transaction.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

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
from . import states
from .records import AtRisk, OutboxPolicy

__all__ = [
    "BATCH_ENDED",
    "EVENT_TYPES",
    "PER_REQUEST",
    "PING",
    "REQUEST_COMPLETED",
    "REQUEST_ESCALATED",
    "REQUEST_FAILED",
    "TAG_DRAINED",
    "OutboxRow",
    "batch_ended",
    "drained_through",
    "escalated",
    "escalations",
    "is_keyed",
    "request_final",
    "tag_drained",
    "wants_request",
]

# An event as an engine inserts it into its outbox: (type, tag, payload); its created_at is
# the `now` of the transaction that writes it.
OutboxRow: TypeAlias = tuple[str, str | None, str]

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
    batch_id: int,
    batch: Sequence[Any],
    *,
    counts: Mapping[str, int],
    missing: int,
    classes: Sequence[str],
    turnaround: float | None,
    ledger: Sequence[Mapping[str, Any]],
) -> OutboxRow:
    """batch.ended: the batch, given as (api id, submitted_at, ended_at), its class, its results
    by type (`counts` from the ledger, plus the `missing` requests), turnaround and cost. With
    no turnaround recorded, it is the time from submission to the end."""
    api_id, submitted_at, ended_at = batch
    counts = {**counts, "missing": missing} if missing else dict(counts)
    if turnaround is None and submitted_at is not None:
        turnaround = max(0.0, float(ended_at) - float(submitted_at))
    cost, saving = _money(policy, ledger)
    data = {
        "batch_id": api_id,
        "local_batch_id": batch_id,
        "class": classes[0] if len(classes) == 1 else None,
        "classes": list(classes),
        "counts": counts,
        "requests": sum(counts.values()),
        "submitted_at": rfc3339(submitted_at),
        "ended_at": rfc3339(ended_at),
        "turnaround_seconds": turnaround,
        "cost_usd": cost,
        "saving_usd": saving,
    }
    return BATCH_ENDED, None, to_json(data)


def tag_drained(
    policy: OutboxPolicy, tag: str, groups: Sequence[Sequence[Any]], ledger: Sequence[Mapping[str, Any]]
) -> OutboxRow:
    """tag.drained: the tag's requests since its previous drain, by outcome; `groups` holds, per
    outcome, (outcome, requests, first created_at, last created_at, last id)."""
    counts = {str(g[0]): int(g[1]) for g in groups}
    cost, saving = _money(policy, ledger)
    data = {
        "tag": tag,
        "requests": sum(counts.values()),
        "counts": counts,
        "cost_usd": cost,
        "saving_usd": saving,
        "first_submitted_at": rfc3339(min(float(g[2]) for g in groups)),
        "last_submitted_at": rfc3339(max(float(g[3]) for g in groups)),
    }
    return TAG_DRAINED, tag, to_json(data)


def drained_through(groups: Sequence[Sequence[Any]]) -> int:
    """The last request id a drain of these `groups` (as `tag_drained` takes them) covers."""
    return max(int(g[4]) for g in groups)


def _about(request_id: int, key: str, tag: str | None, latency: str, model: str) -> dict[str, Any]:
    return {"request_id": request_id, "key": key, "tag": tag, "class": latency, "model": model}


def request_final(policy: OutboxPolicy, row: Iterable[Any]) -> OutboxRow | None:
    """request.completed / request.failed for a request made final, given as (id, key, class,
    tag, model, state, attempts, outcome); None when the policy does not want it. SQLite's
    ingest builds the same data in SQL (sqlite/outbox.py: emit_ingest_events)."""
    request_id, key, latency, tag, model, state, attempts, outcome = tuple(row)[:8]
    kind = REQUEST_COMPLETED if state == states.SUCCEEDED else REQUEST_FAILED
    if not (policy.wants(kind) and wants_request(policy, key, tag)):
        return None
    data = _about(int(request_id), key, tag, latency, model)
    data.update(outcome=outcome, attempts=int(attempts))
    return kind, tag, to_json(data)


def escalations(policy: OutboxPolicy | None, rows: Sequence[AtRisk], won: Collection[int]) -> list[AtRisk]:
    """Those of `rows` an escalation took (their ids in `won`) that get a request.escalated
    event: none unless the policy wants it."""
    if policy is None or not policy.wants(REQUEST_ESCALATED) or not won:
        return []
    taken = set(won)
    return [r for r in rows if r.id in taken]


def escalated(taken: Sequence[AtRisk], tags: Mapping[int, str | None]) -> list[OutboxRow]:
    """request.escalated for each of `taken` (from `escalations`), its tag looked up in `tags`:
    a deadline sent the request to the real-time lane."""
    out: list[OutboxRow] = []
    for r in taken:
        tag = tags.get(r.id)
        data = _about(r.id, r.key, tag, r.latency, r.model)
        data.update(deadline_at=rfc3339(r.deadline_at), from_state=r.state)
        out.append((REQUEST_ESCALATED, tag, to_json(data)))
    return out
