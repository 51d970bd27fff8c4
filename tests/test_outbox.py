"""The webhook outbox in the store, on both engines: events written in the transactions of the
changes they announce (and only those the policy wants), and the deliveries' bookkeeping."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from router.providers.anthropic.provider import BATCH_FORMAT
from router.store import AtRisk, NewRequest, OutboxPolicy, StoreEngine, events
from tests.test_store_contract import MODEL, NOW, Policy, line

BOTH_ENGINES = True

ALL = frozenset(events.EVENT_TYPES)


def costs(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """A stand-in price: a dollar per input token, saving half of it."""
    total = float(sum(r["input_tokens"] for r in rows))
    return total, total / 2


def new(key: str, tag: str | None, *, created: float = NOW) -> NewRequest:
    return NewRequest(key, "daily", tag, MODEL, json.dumps({"q": key}).encode(), created, None)


async def batch_of(store: StoreEngine, requests: list[NewRequest], api_id: str) -> tuple[int, list[int]]:
    tickets = await store.enqueue_many(requests)
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10_000, max_bytes=10**9, now=NOW
    )
    assert claim is not None
    await store.mark_submitted(claim.batch_id, api_id, now=NOW, next_poll_at=NOW)
    return claim.batch_id, [t.request_id for t in tickets]


async def outbox(store: StoreEngine) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, json.loads(e.payload)) for e in await store.unrouted_events()]


async def finish(store: StoreEngine, batch_id: int, lines: list[bytes]) -> None:
    await store.apply_results(batch_id, lines, now=NOW + 10, max_attempts={"daily": 1}, retry=Policy())
    await store.finish_batch(batch_id, now=NOW + 20)


async def test_without_a_policy_nothing_is_written(store: StoreEngine) -> None:
    batch_id, ids = await batch_of(store, [new("a", "t")], "msgbatch_1")
    await finish(store, batch_id, [line(ids[0])])
    assert await store.unrouted_events() == []


async def test_a_batch_ending_announces_itself_and_each_tag_it_drained(store: StoreEngine) -> None:
    store.set_outbox(OutboxPolicy(ALL - events.PER_REQUEST, costs=costs))
    first, ids = await batch_of(
        store, [new("a1", "alpha", created=NOW - 5), new("a2", "alpha"), new("b1", "beta")], "msgbatch_1"
    )
    # beta has a request still pending outside the batch: it is not drained by this batch.
    await store.enqueue(new("b2", "beta"))
    await finish(store, first, [line(ids[0], tokens=10), line(ids[1], "errored"), line(ids[2], tokens=5)])
    got = await outbox(store)
    assert [kind for kind, _ in got] == [events.BATCH_ENDED, events.TAG_DRAINED]
    ended, drained = got[0][1], got[1][1]
    assert ended["batch_id"] == "msgbatch_1" and ended["class"] == "daily"
    assert ended["counts"] == {"succeeded": 2, "errored": 1} and ended["requests"] == 3
    assert ended["cost_usd"] == 15.0 and ended["saving_usd"] == 7.5
    assert drained["tag"] == "alpha" and drained["counts"] == {"succeeded": 1, "errored": 1}
    assert drained["cost_usd"] == 10.0 and drained["requests"] == 2
    assert drained["first_submitted_at"] < drained["last_submitted_at"]

    second, (b2,) = await batch_of(store, [new("b2", "beta")], "msgbatch_2")
    await finish(store, second, [line(b2, tokens=1)])
    drains = [data for kind, data in await outbox(store) if kind == events.TAG_DRAINED]
    # beta drains once, with both of its requests; alpha is not announced again.
    assert [d["tag"] for d in drains] == ["alpha", "beta"]
    assert drains[1]["counts"] == {"succeeded": 2} and drains[1]["cost_usd"] == 6.0


async def test_a_tag_used_again_drains_again_with_only_its_new_requests(store: StoreEngine) -> None:
    store.set_outbox(OutboxPolicy(frozenset({events.TAG_DRAINED})))
    for n, api_id in enumerate(("msgbatch_1", "msgbatch_2")):
        batch_id, ids = await batch_of(store, [new(f"k{n}a", "nightly"), new(f"k{n}b", "nightly")], api_id)
        await finish(store, batch_id, [line(i) for i in ids])
    drains = [data for _, data in await outbox(store)]
    assert [d["counts"] for d in drains] == [{"succeeded": 2}, {"succeeded": 2}]
    assert drains[0]["cost_usd"] is None  # no price given


async def test_per_request_events_only_for_keys_and_tags_asked_for(store: StoreEngine) -> None:
    store.set_outbox(OutboxPolicy(events.PER_REQUEST, request_keys=("sku-*",), request_tags=("vip",)))
    batch_id, ids = await batch_of(
        store,
        [new("sku-1", None), new("other", None), new("auto-123", "vip"), new("x", "vip"), new("sku-2", None)],
        "msgbatch_1",
    )
    await finish(
        store, batch_id, [line(ids[0]), line(ids[1]), line(ids[2]), line(ids[3]), line(ids[4], "expired")]
    )
    got = await outbox(store)
    assert sorted((kind, data["key"]) for kind, data in got) == [
        (events.REQUEST_COMPLETED, "sku-1"),
        (events.REQUEST_COMPLETED, "x"),
        (events.REQUEST_FAILED, "sku-2"),
    ]
    failed = next(data for kind, data in got if kind == events.REQUEST_FAILED)
    assert failed["outcome"] == "expired" and failed["attempts"] == 1


async def test_an_ingest_that_rolls_back_announces_nothing(store: StoreEngine) -> None:
    store.set_outbox(OutboxPolicy(ALL, request_keys=("*",)))
    batch_id, ids = await batch_of(store, [new("a", "t")], "msgbatch_1")
    with pytest.raises(ValueError, match="not JSON"):
        await store.apply_results(
            batch_id, [line(ids[0]), b"{broken"], now=NOW, max_attempts={}, retry=Policy()
        )
    assert await store.unrouted_events() == []


async def test_escalation_and_real_time_completion_are_announced(store: StoreEngine) -> None:
    store.set_outbox(OutboxPolicy(ALL, request_keys=("*",)))
    (ticket,) = await store.enqueue_many([NewRequest("k", "daily", "t", MODEL, b"{}", NOW, NOW + 60)])
    row = AtRisk(ticket.request_id, "k", "daily", MODEL, "pending", NOW + 60, None)
    assert await store.mark_escalated([row], NOW) == [ticket.request_id]
    assert await store.complete(
        ticket.request_id,
        from_states=("escalated",),
        succeeded=True,
        outcome="succeeded",
        line=b"{}",
        now=NOW,
    )
    got = await outbox(store)
    assert [kind for kind, _ in got] == [
        events.REQUEST_ESCALATED,
        events.REQUEST_COMPLETED,
        events.TAG_DRAINED,
    ]
    assert got[0][1]["from_state"] == "pending" and got[0][1]["tag"] == "t"


async def test_deliveries_are_routed_claimed_held_and_recorded(store: StoreEngine) -> None:
    store.set_outbox(OutboxPolicy(frozenset({events.TAG_DRAINED})))
    batch_id, ids = await batch_of(store, [new("a", "t")], "msgbatch_1")
    await finish(store, batch_id, [line(ids[0])])
    (event,) = await store.unrouted_events()
    pairs = [(event.id, "https://a.example/hook"), (event.id, "https://b.example/hook")]
    await store.route_events([event.id], pairs, now=NOW)
    await store.route_events([event.id], pairs, now=NOW)  # routed twice: no second delivery
    assert await store.unrouted_events() == []
    claimed = await store.claim_deliveries(now=NOW, hold=30, limit=10)
    assert sorted(d.endpoint for d in claimed) == ["https://a.example/hook", "https://b.example/hook"]
    assert all(d.attempts == 1 and d.event.id == event.id for d in claimed)
    assert await store.claim_deliveries(now=NOW + 1, hold=30) == []  # held by the first claim
    a, b = sorted(claimed, key=lambda d: d.endpoint)
    await store.record_delivery(a.id, state="delivered", next_at=None, status=200, error=None, now=NOW + 1)
    await store.record_delivery(
        b.id, state="pending", next_at=NOW + 5, status=500, error="HTTP 500", now=NOW + 1
    )
    (again,) = await store.claim_deliveries(now=NOW + 5, hold=30)
    assert again.id == b.id and again.attempts == 2
    figures = {f.endpoint: f for f in await store.endpoint_figures()}
    assert figures["https://a.example/hook"].delivered == 1
    assert (
        figures["https://b.example/hook"].retrying == 1
        and figures["https://b.example/hook"].last_error == "HTTP 500"
    )
    assert [d.id for d in await store.list_deliveries(event_id=event.id)] == [b.id, a.id]
    # A pending delivery keeps its event through a purge; a finished one lets it go.
    assert await store.purge_outbox(before=NOW + 100) == 0
    await store.record_delivery(b.id, state="failed", next_at=None, status=404, error="HTTP 404", now=NOW + 6)
    assert await store.purge_outbox(before=NOW + 100) == 1
    assert await store.outbox_event(event.id) is None and await store.list_deliveries() == []
