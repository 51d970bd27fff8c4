"""The store's operations, the same tests on both engines (SQLite and PostgreSQL).

Each test runs once per engine through the `store` fixture (tests/stores.py): the guarded
state machine, the de-duplication of batch results by custom_id, leases and retention must
behave alike whichever database holds the queue.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

import pytest

from router.batcher import stream_body
from router.config import StoreSettings
from router.errors import InvalidRequestError
from router.pricing import TokenCounts
from router.providers.anthropic.provider import BATCH_FORMAT
from router.providers.base import BatchFormat
from router.store import AtRisk, LedgerEntry, NewRequest, StoreEngine, custom_id_for, open_store, states
from tests.stores import raw_rows

BOTH_ENGINES = True
NOW = 1_800_000_000.0
MODEL = "claude-haiku-4-5"


def new(
    key: str, *, params: bytes | None = None, latency: str = "daily", deadline: float | None = None
) -> NewRequest:
    body = params if params is not None else json.dumps({"model": MODEL, "q": key}).encode()
    return NewRequest(key, latency, None, MODEL, body, NOW, deadline)


def line(request_id: int, rtype: str = "succeeded", *, tokens: int = 10, **result: Any) -> bytes:
    if rtype == "succeeded":
        body: dict[str, Any] = {
            "type": "succeeded",
            "message": {"model": MODEL, "usage": {"input_tokens": tokens, "output_tokens": 2 * tokens}},
        }
    else:
        body = {"type": rtype, **result}
    return json.dumps({"custom_id": custom_id_for(request_id), "result": body}).encode()


class Policy:
    """A RetryPolicy stub: resubmits while `attempts < max_attempts`, and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(
        self,
        result: Mapping[str, Any],
        *,
        attempts: int,
        max_attempts: int,
        deadline_at: float | None,
        now: float,
    ) -> bool:
        self.calls.append((str(result.get("type")), attempts, max_attempts))
        return attempts < max_attempts


async def submitted_batch(
    store: StoreEngine, count: int, *, api_id: str = "msgbatch_1"
) -> tuple[int, list[int]]:
    """`count` requests stored, claimed into one batch, and marked submitted."""
    tickets = await store.enqueue_many([new(f"{api_id}-{i}") for i in range(count)])
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10_000, max_bytes=10**9, now=NOW
    )
    assert claim is not None and claim.request_count == count
    await store.mark_submitted(claim.batch_id, api_id, now=NOW, next_poll_at=NOW)
    return claim.batch_id, [t.request_id for t in tickets]


async def apply(
    store: StoreEngine, batch_id: int, lines: list[bytes], policy: Policy | None = None, attempts: int = 3
) -> Any:
    return await store.apply_results(
        batch_id, lines, now=NOW + 10, max_attempts={"daily": attempts}, retry=policy or Policy()
    )


# ---------------------------------------------------------------------------- enqueue


async def test_enqueue_is_idempotent_on_key(store: StoreEngine) -> None:
    first = await store.enqueue(new("a"))
    again = await store.enqueue(new("a"))
    assert first.created and not again.created
    assert again.request_id == first.request_id
    assert (await store.state_counts()) == {"pending": 1}


async def test_a_key_reused_with_other_params_is_refused_and_nothing_changes(store: StoreEngine) -> None:
    await store.enqueue(new("a", params=b'{"x":1}'))
    with pytest.raises(InvalidRequestError, match="already used"):
        await store.enqueue(new("a", params=b'{"x":2}'))
    many = await store.enqueue_many([new("b"), new("a", params=b'{"x":3}'), new("b")])
    assert isinstance(many[1], InvalidRequestError)
    assert many[0].created and not many[2].created and many[0].request_id == many[2].request_id
    row = await store.get_by_key("a")
    assert row is not None and row.state == states.PENDING
    assert (await store.digests_by_key(["a", "b", "zz"])).keys() == {"a", "b"}


async def test_concurrent_enqueues_share_group_commits(store: StoreEngine) -> None:
    tickets = await asyncio.gather(*(store.enqueue(new(f"k{i}")) for i in range(500)))
    assert len({t.request_id for t in tickets}) == 500
    assert all(t.created for t in tickets)
    count, size, oldest = await store.pending_stats()
    assert count == 500 and oldest == NOW and size > 0
    # Group commit: ids are handed out in one statement per group, so the 500 callers of
    # one event-loop turn got consecutive ids in call order.
    ids = [t.request_id for t in tickets]
    assert ids == sorted(ids) and ids[-1] - ids[0] == 499


async def test_postgres_group_commit_is_one_transaction_for_many_callers(pg_url: str) -> None:
    # PostgreSQL counts its commits (pg_stat_database); SQLite's group commit shows in the
    # consecutive ids above.
    store = await open_store(StoreSettings(url=pg_url))
    try:
        await _count_commits(store)
    finally:
        await store.close()


async def _count_commits(store: StoreEngine) -> None:
    pool = store._pool  # type: ignore[attr-defined]
    stats = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        before = await conn.fetchval(stats)
    await asyncio.gather(*(store.enqueue(new(f"k{i}")) for i in range(1000)))
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        after = await conn.fetchval(stats)
    # 1,000 requests, a handful of commits (the stats queries count too), not 1,000.
    assert after - before < 20


# ---------------------------------------------------------------------------- claims

_JSONL_HEAD = b'{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":'
# A JSONL framing (OpenAI's batch input file): the store must size any provider's body.
JSONL = BatchFormat(
    body_head=b"",
    body_tail=b"\n",
    separator=b"\n",
    entry_overhead=len(_JSONL_HEAD) - 2 + 1,
    entry_head=_JSONL_HEAD,
    entry_tail=b"}",
)


class _Framing:
    batch_format = JSONL


async def test_a_claim_sizes_the_body_in_the_framing_it_is_given(store: StoreEngine) -> None:
    await store.enqueue_many(
        [new(f"k{i}", params=json.dumps({"q": "y" * (40 + i)}).encode()) for i in range(5)]
    )
    claim = await store.claim_batch(frame=JSONL, latencies=None, max_requests=100, max_bytes=10**9, now=NOW)
    assert claim is not None and claim.request_count == 5
    body = b"".join([chunk async for chunk in stream_body(store, claim, _Framing())])  # type: ignore[arg-type]
    assert len(body) == claim.body_bytes  # stream_body raises on a mismatch too
    lines = body.splitlines()
    assert [json.loads(line)["body"]["q"] for line in lines] == ["y" * (40 + i) for i in range(5)]
    # The byte budget is the framed body's: exactly three entries' worth takes three.
    three = sum(len(line) + 1 for line in lines[:3])
    assert await store.release_batch(claim.batch_id) == 5
    again = await store.claim_batch(frame=JSONL, latencies=None, max_requests=100, max_bytes=three, now=NOW)
    assert again is not None and (again.request_count, again.body_bytes) == (3, three)
    await store.release_batch(again.batch_id)
    fewer = await store.claim_batch(
        frame=JSONL, latencies=None, max_requests=100, max_bytes=three - 1, now=NOW
    )
    assert fewer is not None and fewer.request_count == 2


async def test_claims_take_the_oldest_within_the_byte_budget(store: StoreEngine) -> None:
    await store.enqueue_many([new(f"k{i}", params=b"x" * 100) for i in range(10)])
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=4, max_bytes=10**9, now=NOW
    )
    assert claim is not None and claim.request_count == 4
    small = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=100, max_bytes=400, now=NOW
    )
    assert small is not None and small.request_count == 2 and small.body_bytes <= 400
    assert (
        await store.claim_batch(
            frame=BATCH_FORMAT, latencies=["weekly"], max_requests=100, max_bytes=10**9, now=NOW
        )
        is None
    )
    chunks = [c async for c in store.iter_claimed(claim.batch_id, chunk=3)]
    assert [len(c) for c in chunks] == [3, 1]
    ids = [rid for c in chunks for rid, _ in c]
    assert ids == sorted(ids) and all(p == b"x" * 100 for c in chunks for _, p in c)
    assert (await store.state_counts()) == {"pending": 4, "submitting": 6}


async def test_two_stores_claiming_at_once_never_claim_one_request_twice(
    store: StoreEngine, store_settings: StoreSettings
) -> None:
    await store.enqueue_many([new(f"k{i}") for i in range(600)])
    other = await open_store(store_settings)
    try:

        async def claim_all(s: StoreEngine) -> list[int]:
            got: list[int] = []
            while (
                c := await s.claim_batch(
                    frame=BATCH_FORMAT, latencies=None, max_requests=25, max_bytes=10**9, now=NOW
                )
            ) is not None:
                got.extend([rid async for chunk in s.iter_claimed(c.batch_id) for rid, _ in chunk])
            return got

        mine, theirs = await asyncio.gather(claim_all(store), claim_all(other))
    finally:
        await other.close()
    assert len(mine) + len(theirs) == 600
    assert len(set(mine) | set(theirs)) == 600


async def test_mark_submitted_and_release(store: StoreEngine) -> None:
    await store.enqueue_many([new(f"k{i}") for i in range(3)])
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10, max_bytes=10**9, now=NOW
    )
    assert claim is not None
    assert await store.release_batch(claim.batch_id) == 3
    assert (await store.state_counts()) == {"pending": 3}
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10, max_bytes=10**9, now=NOW
    )
    assert claim is not None
    await store.mark_submitted(claim.batch_id, "msgbatch_x", now=NOW, next_poll_at=NOW + 60)
    assert await store.release_batch(claim.batch_id) == 0  # guarded: submitted stays submitted
    assert (await store.state_counts()) == {"submitted": 3}
    (batch,) = [b for b in await store.open_batches() if b.id == claim.batch_id]
    assert (batch.api_id, batch.state, batch.request_count) == ("msgbatch_x", states.B_IN_PROGRESS, 3)
    assert await store.known_api_ids(["msgbatch_x", "msgbatch_y"]) == {"msgbatch_x"}
    assert await store.batch_count() == 1
    assert await store.still_in_batch(claim.batch_id) == 3


async def test_intents_are_adopted_or_released_once(store: StoreEngine) -> None:
    await store.enqueue_many([new(f"k{i}") for i in range(2)])
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10, max_bytes=10**9, now=NOW
    )
    assert claim is not None
    assert await store.adopt_batch(claim.batch_id, "msgbatch_a", state=states.B_CREATING, now=NOW)
    assert not await store.adopt_batch(claim.batch_id, "msgbatch_b", state=states.B_CREATING, now=NOW)
    assert (await store.state_counts()) == {"submitted": 2}
    await store.enqueue(new("k9"))
    other = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10, max_bytes=10**9, now=NOW
    )
    assert other is not None
    # The same remote batch cannot be adopted by a second intent.
    assert not await store.adopt_batch(other.batch_id, "msgbatch_a", state=states.B_CREATING, now=NOW)
    assert await store.release_intent(other.batch_id, state=states.B_CREATING, to=states.B_RELEASED) == 1
    assert await store.release_intent(other.batch_id, state=states.B_CREATING, to=states.B_RELEASED) == 0
    await store.close_released_intent(other.batch_id)
    assert other.batch_id not in {b.id for b in await store.open_batches()}


# ---------------------------------------------------------------------------- ingest


async def test_apply_results_verdicts(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 5)
    policy = Policy()
    lines = [
        line(ids[0]),
        line(ids[1], "errored", error={"type": "error", "error": {"type": "api_error"}}),
        line(ids[0], tokens=99),  # the same custom_id again in one chunk: the first wins
        line(999_999),  # a custom_id this store does not know
        b'{"custom_id": "r0001", "result": {"type": "succeeded"}}',  # not a custom_id we write
        line(ids[2], "expired"),
    ]
    stats, finals = await store.apply_results(
        batch_id, lines, now=NOW + 10, max_attempts={"daily": 1}, retry=policy, default_max_attempts=3
    )
    assert (stats.delivered, stats.retried, stats.duplicates, stats.skipped, stats.unknown) == (3, 0, 0, 1, 2)
    assert sorted(policy.calls) == [("errored", 1, 1), ("expired", 1, 1)]
    # The completion numbers are the final rows' own, in order, and nobody else's.
    assert len(stats.completions) == 3
    after = await store.completed_since(stats.completions.start - 1)
    assert after == (stats.completions.stop - 1, [f[0] for f in finals])
    by_id = {f[0]: f for f in finals}
    assert set(by_id) == {ids[0], ids[1], ids[2]}
    assert by_id[ids[0]][5] == states.SUCCEEDED and by_id[ids[0]][8] == lines[0]
    assert by_id[ids[1]][5] == states.FAILED and by_id[ids[1]][7] == "errored"
    assert by_id[ids[2]][6] == 1  # attempts counted
    rows = {r.id: r for r in await store.get_many(ids)}
    assert rows[ids[0]].result == lines[0] and rows[ids[0]].state == states.SUCCEEDED
    assert tuple(by_id[ids[0]]) == tuple(rows[ids[0]])  # the handed-over row is the stored row
    # A chunk applied twice (a stream read again) changes nothing and bills nothing twice.
    again, finals_again = await apply(store, batch_id, lines)
    assert (again.delivered, again.skipped, again.unknown, finals_again) == (0, 4, 2, [])
    totals = await store.ledger_totals()
    assert [(t["lane"], t["duplicate"], t["requests"], t["input_tokens"]) for t in totals] == [
        ("batch", 0, 1, 10)
    ]


async def test_the_same_chunk_applied_twice_at_once_bills_and_delivers_once(store: StoreEngine) -> None:
    """Two ingests of one batch at once (a daemon and a stray `poll`): on PostgreSQL the second
    waits for the requests' locks and, its snapshot older than the first's commit, takes the
    lines for duplicates; its ledger rows are then left out, not a unique violation."""
    batch_id, ids = await submitted_batch(store, 2000)
    lines = [line(i) for i in ids]
    (first, done_first), (second, done_second) = await asyncio.gather(
        apply(store, batch_id, lines), apply(store, batch_id, lines)
    )
    assert first.delivered + second.delivered == 2000
    assert sorted(f[0] for f in done_first + done_second) == sorted(ids)
    totals = await store.ledger_totals()
    assert [(t["duplicate"], t["requests"]) for t in totals] == [(0, 2000)]


async def test_lines_of_an_odd_shape_read_alike_on_both_engines(store: StoreEngine) -> None:
    """Lines whose result or message is not an object, or whose type is not a string, as the
    API never writes them: the PostgreSQL engine's Python reading of the lines gives the
    verdicts SQLite's json_extract gives."""
    batch_id, ids = await submitted_batch(store, 4)
    policy = Policy()
    cid = [custom_id_for(i) for i in ids]
    lines = [
        json.dumps({"custom_id": cid[0], "result": [1]}).encode(),
        json.dumps({"custom_id": cid[1], "result": {"type": "succeeded", "message": []}}).encode(),
        json.dumps({"custom_id": cid[2], "result": {"type": 5}}).encode(),
        json.dumps({"custom_id": cid[3], "result": None, "extra": {"deep": [1, {"x": 2}]}}).encode(),
    ]
    stats, finals = await apply(store, batch_id, lines, policy)
    assert (stats.delivered, stats.retried) == (1, 3) and [f[0] for f in finals] == [ids[1]]
    assert sorted(policy.calls) == [("5", 1, 3), ("None", 1, 3), ("None", 1, 3)]
    totals = await store.ledger_totals()  # the succeeded line, billed to the request's model
    assert [(t["model"], t["requests"], t["input_tokens"]) for t in totals] == [(MODEL, 1, 0)]


async def test_retryable_results_go_back_to_pending_until_the_policy_says_no(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 2)
    policy = Policy()
    stats, finals = await apply(store, batch_id, [line(ids[0], "expired"), line(ids[1])], policy, attempts=2)
    assert (stats.delivered, stats.retried) == (1, 1) and [f[0] for f in finals] == [ids[1]]
    row = (await store.get_many([ids[0]]))[0]
    assert (row.state, row.attempts) == (states.PENDING, 1)
    assert await store.finish_batch(batch_id, now=NOW + 20) == 0
    # Sent again, it fails this time: attempts reached the class's limit.
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10, max_bytes=10**9, now=NOW
    )
    assert claim is not None and claim.request_count == 1
    await store.mark_submitted(claim.batch_id, "msgbatch_2", now=NOW, next_poll_at=NOW)
    stats, finals = await apply(store, claim.batch_id, [line(ids[0], "expired")], policy, attempts=2)
    assert stats.delivered == 1 and finals[0][5] == states.FAILED and finals[0][6] == 2
    assert policy.calls == [("expired", 1, 2), ("expired", 2, 2)]


async def test_a_result_for_a_request_answered_elsewhere_is_a_duplicate(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 2)
    (at_risk,) = [r for r in await store.at_risk(NOW + 10**9) if r.id == ids[0]] or [
        AtRisk(ids[0], "", "daily", MODEL, states.SUBMITTED, NOW, batch_id)
    ]
    assert await store.mark_escalated([at_risk], NOW) == [ids[0]]
    assert await store.complete(
        ids[0], from_states=[states.ESCALATED], succeeded=True, outcome="succeeded", line=b"{}", now=NOW
    )
    stats, finals = await apply(store, batch_id, [line(ids[0]), line(ids[1])])
    assert (stats.delivered, stats.duplicates) == (1, 1) and [f[0] for f in finals] == [ids[1]]
    totals = {(t["duplicate"], t["requests"]) for t in await store.ledger_totals()}
    assert totals == {(0, 1), (1, 1)}


async def test_finish_batch_releases_unanswered_requests(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 3)
    await apply(store, batch_id, [line(ids[1])])
    assert await store.finish_batch(batch_id, now=NOW + 30) == 2
    assert (await store.state_counts()) == {"pending": 2, "succeeded": 1}
    assert batch_id not in {b.id for b in await store.open_batches()}


async def test_fail_missing_fails_the_unanswered_with_a_result_line(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 2)
    await apply(store, batch_id, [line(ids[0])])
    assert await store.fail_missing(batch_id, now=NOW + 40, reason="gone") == [ids[1]]
    row = (await store.get_many([ids[1]]))[0]
    assert (row.state, row.outcome) == (states.FAILED, "missing")
    assert row.result is not None and json.loads(row.result)["result"]["reason"] == "gone"


async def test_unanswered_lists_the_requests_still_waiting(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 3)
    assert await store.unanswered(batch_id) == ids
    await apply(store, batch_id, [line(ids[1])])
    assert await store.unanswered(batch_id) == [ids[0], ids[2]]
    await store.finish_batch(batch_id, now=NOW + 30)
    assert await store.unanswered(batch_id) == []


async def test_a_line_that_is_not_json_is_named_and_nothing_is_written(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 1)
    with pytest.raises(ValueError, match="line 2"):
        await apply(store, batch_id, [line(ids[0]), b"{not json"])
    assert (await store.state_counts()) == {"submitted": 1}


async def test_a_result_line_is_stored_byte_for_byte_with_escapes_and_non_ascii(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 1)
    reply = {
        "model": MODEL,
        "content": [{"type": "text", "text": "a\x00b é 💡"}],
        "usage": {"input_tokens": 1},
    }
    raw = {"custom_id": custom_id_for(ids[0]), "result": {"type": "succeeded", "message": reply}}
    text = json.dumps(raw, ensure_ascii=False).encode()  # NUL as \u0000, the rest as UTF-8
    stats, finals = await apply(store, batch_id, [text])
    assert stats.delivered == 1 and finals[0][8] == text
    (row,) = await store.get_many(ids)
    assert row.result == text and row.state == states.SUCCEEDED


async def test_postgres_names_a_line_it_cannot_store_and_writes_nothing(pg_url: str) -> None:
    store = await open_store(StoreSettings(url=pg_url))
    try:
        batch_id, ids = await submitted_batch(store, 2)
        nul_type = json.dumps(
            {"custom_id": custom_id_for(ids[1]), "result": {"type": "succ\x00eeded"}}
        ).encode()
        with pytest.raises(ValueError, match="line 2 of the chunk has a NUL"):
            await apply(store, batch_id, [line(ids[0]), nul_type])
        with pytest.raises(ValueError, match="line 3 of the chunk is not JSON"):
            await apply(store, batch_id, [line(ids[0]), line(ids[1]), b'{"custom_id": "\xff"}'])
        assert (await store.state_counts()) == {"submitted": 2}
        assert await store.ledger_totals() == []
    finally:
        await store.close()


async def test_usage_counts_follow_the_python_rules(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 1)
    usage = {
        "input_tokens": 7.9,
        "output_tokens": True,
        "cache_creation_input_tokens": 10,
        "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3},
        "cache_read_input_tokens": "5",
    }
    raw = {"custom_id": custom_id_for(ids[0]), "result": {"type": "succeeded", "message": {"usage": usage}}}
    await apply(store, batch_id, [json.dumps(raw).encode()])
    (total,) = await store.ledger_totals()
    expected = TokenCounts.from_usage(usage)
    assert (total["input_tokens"], total["output_tokens"], total["cache_write_5m"]) == (
        expected.input,
        expected.output,
        expected.cache_write_5m,
    )
    assert (total["cache_write_1h"], total["cache_read"], total["model"]) == (
        expected.cache_write_1h,
        expected.cache_read,
        MODEL,
    )


# ---------------------------------------------------------------------------- completions


async def test_completed_since_reads_in_completion_order(store: StoreEngine) -> None:
    start = await store.max_done_seq()
    batch_id, ids = await submitted_batch(store, 4)
    await apply(store, batch_id, [line(ids[2]), line(ids[0])])
    await apply(store, batch_id, [line(ids[3])])
    cursor, done = await store.completed_since(start)
    assert done == [ids[2], ids[0], ids[3]]
    assert cursor == await store.max_done_seq()
    assert await store.completed_since(cursor) == (cursor, [])
    cursor2, first = await store.completed_since(start, limit=1)
    assert first == [ids[2]] and cursor2 < cursor


async def test_finished_results_and_results_by_key(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 2, api_id="b")
    await apply(store, batch_id, [line(ids[1])])
    (only,) = await store.finished_results(after=0, limit=10)
    assert (only.id, only.state, only.line) == (ids[1], states.SUCCEEDED, line(ids[1]))
    found = await store.results_by_key(["b-0", "b-1", "nope"])
    assert found["b-0"].line is None and found["b-0"].state == states.SUBMITTED
    assert found["b-1"].line == line(ids[1])


# ---------------------------------------------------------------------------- deadlines


async def test_escalation_is_guarded_and_complete_is_once(store: StoreEngine) -> None:
    await store.enqueue_many([new("soon", deadline=NOW + 5), new("late", deadline=NOW + 10**6)])
    risky = await store.at_risk(NOW + 60)
    assert [r.key for r in risky] == ["soon"]
    assert await store.mark_escalated(risky, NOW) == [risky[0].id]
    assert await store.mark_escalated(risky, NOW) == []  # read as pending, no longer pending
    assert await store.take_over_stale(before=NOW + 1, now=NOW + 2) == [risky[0].id]
    (params,) = await store.escalated_params([risky[0].id])
    assert params[0] == risky[0].id and params[4].startswith(b"{")
    assert await store.escalated_count() == 1
    ledger = LedgerEntry(
        NOW, "realtime", MODEL, "daily", None, "succeeded", TokenCounts(input=3), request_id=risky[0].id
    )
    args: dict[str, Any] = {"succeeded": True, "outcome": "succeeded", "line": b'{"x":1}', "now": NOW}
    assert await store.complete(risky[0].id, from_states=[states.ESCALATED], ledger=ledger, **args)
    assert not await store.complete(risky[0].id, from_states=[states.ESCALATED], **args)
    row = await store.get_by_key("soon")
    assert row is not None and (row.state, row.result) == (states.SUCCEEDED, b'{"x":1}')
    await store.record_turnaround(1, 30.0)
    assert await store.recent_turnarounds() == []  # batch 1 carries no request


async def test_turnarounds_are_kept_per_model(store: StoreEngine) -> None:
    batch_id, _ = await submitted_batch(store, 2)
    await store.record_turnaround(batch_id, 42.0)
    await store.record_turnaround(batch_id, 43.0)  # once per batch and model
    assert await store.turnaround_samples(MODEL) == [42.0]
    assert await store.turnaround_samples(None) == [42.0]
    assert await store.recent_turnarounds() == [(MODEL, 42.0)]


async def test_an_open_batch_counts_every_request_however_it_ended(store: StoreEngine) -> None:
    # Final by the batch's own result, answered in real time after an escalation, failed for
    # its deadline, resubmitted, still waiting: an open batch's progress and its turnaround's
    # models count them all (PostgreSQL finds the first kind by its ledger row, sql.BATCH_ROWS).
    models = ["m-escalated", "m-deadline", "m-ingested", "m-retried", "m-waiting"]
    tickets = await store.enqueue_many(
        [NewRequest(f"k{i}", "daily", None, m, b"{}", NOW, None) for i, m in enumerate(models)]
    )
    claim = await store.claim_batch(
        frame=BATCH_FORMAT, latencies=None, max_requests=10, max_bytes=10**9, now=NOW
    )
    assert claim is not None and claim.request_count == len(models)
    batch_id = claim.batch_id
    await store.mark_submitted(batch_id, "msgbatch_1", now=NOW, next_poll_at=NOW)
    escalated, deadline, ingested, retried, _ = (t.request_id for t in tickets)
    at_risk = AtRisk(escalated, "k0", "daily", models[0], states.SUBMITTED, NOW, batch_id)
    assert await store.mark_escalated([at_risk], NOW) == [escalated]
    args: dict[str, Any] = {"line": b"{}", "now": NOW + 1}
    assert await store.complete(
        escalated, from_states=[states.ESCALATED], succeeded=True, outcome="succeeded", **args
    )
    assert await store.complete(
        deadline, from_states=[states.SUBMITTED], succeeded=False, outcome="deadline", **args
    )
    stats, _ = await apply(store, batch_id, [line(ingested), line(retried, "errored", error={})])
    assert (stats.delivered, stats.retried) == (1, 1)
    progress = await store.open_batch_progress()
    assert progress[batch_id] == {"succeeded": 2, "failed": 1, "pending": 1, "submitted": 1}
    await store.record_turnaround(batch_id, 60.0)
    assert sorted(await store.recent_turnarounds()) == [(m, 60.0) for m in sorted(models)]
    assert await store.still_in_batch(batch_id) == 1


# ---------------------------------------------------------------------------- ledger, leases, purge


async def test_ledger_entries_are_summed_per_lane_and_model(store: StoreEngine) -> None:
    for n in (1, 2, 3):
        store.record(
            LedgerEntry(NOW, "realtime", MODEL, "fast", None, "succeeded", TokenCounts(input=n, output=1))
        )
    await store.record_now(LedgerEntry(NOW, "realtime", MODEL, "fast", None, "errored", TokenCounts()))
    (row,) = await store.ledger_totals()
    assert (row["lane"], row["requests"], row["input_tokens"], row["output_tokens"]) == ("realtime", 3, 6, 3)


async def test_lease_acquire_renew_takeover_release(store: StoreEngine) -> None:
    assert await store.lease() is None
    assert await store.acquire_lease("elsewhere:1:a", ttl=10, now=NOW)
    assert not await store.acquire_lease("elsewhere:2:b", ttl=10, now=NOW + 5)
    assert await store.acquire_lease("elsewhere:1:a", ttl=10, now=NOW + 5)  # renewed
    held = await store.lease()
    assert held is not None and (held.owner, held.acquired_at, held.expires_at) == (
        "elsewhere:1:a",
        NOW,
        NOW + 15,
    )
    assert await store.acquire_lease("elsewhere:2:b", ttl=10, now=NOW + 15)  # expired: taken over
    assert not await store.release_lease("elsewhere:1:a")
    assert await store.release_lease("elsewhere:2:b")
    assert await store.lease() is None


async def test_a_dead_local_holder_is_taken_over_at_once(store: StoreEngine) -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()
    assert await store.acquire_lease(f"{socket.gethostname()}:{child.pid}:x", ttl=3600, now=NOW)
    assert await store.acquire_lease("elsewhere:1:a", ttl=10, now=NOW + 1)


async def test_purge_drops_old_final_rows_and_keeps_the_rest(store: StoreEngine) -> None:
    batch_id, ids = await submitted_batch(store, 3)
    await apply(store, batch_id, [line(ids[0]), line(ids[1])])
    await store.finish_batch(batch_id, now=NOW + 10)
    await store.enqueue(new("fresh"))
    store.record(LedgerEntry(NOW, "realtime", MODEL, "fast", None, "succeeded", TokenCounts(input=1)))
    report = await store.purge(before=time.time() + 10**9)
    # The newest completion (ids[1]) is kept, the pending ones too; the old batch row stays
    # while ids[2] waits (pending again) only if it were still submitted: it is not.
    assert (report.requests, report.batches) == (1, 1)
    assert report.ledger >= 2
    left = await store.state_counts()
    assert left == {"pending": 2, "succeeded": 1}
    assert await raw_rows(store, "SELECT count(*) FROM request_params") == [(3,)]  # theirs only


async def test_a_reader_of_completed_since_misses_nothing_while_two_stores_complete(
    store: StoreEngine, store_settings: StoreSettings
) -> None:
    # Completion numbers must become visible in order even when two processes complete at
    # once: a reader's cursor must never step past a number whose transaction commits later.
    tickets = await store.enqueue_many([new(f"k{i}") for i in range(300)])
    rows = [AtRisk(t.request_id, t.key, "daily", MODEL, states.PENDING, NOW, None) for t in tickets]
    assert len(await store.mark_escalated(rows, NOW)) == 300
    other = await open_store(store_settings)
    seen: list[int] = []
    finished = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        while True:
            last_pass = finished.is_set()
            cursor, ids = await store.completed_since(cursor, limit=50)
            seen.extend(ids)
            if last_pass and not ids:
                return
            await asyncio.sleep(0)

    async def complete_all(s: StoreEngine, part: list[int]) -> None:
        done = await asyncio.gather(
            *(
                s.complete(
                    rid,
                    from_states=[states.ESCALATED],
                    succeeded=True,
                    outcome="succeeded",
                    line=b"{}",
                    now=NOW,
                )
                for rid in part
            )
        )
        assert all(done)

    reader = asyncio.create_task(follow())
    try:
        ids = [t.request_id for t in tickets]
        await asyncio.gather(complete_all(store, ids[::2]), complete_all(other, ids[1::2]))
    finally:
        finished.set()
        await reader
        await other.close()
    assert sorted(seen) == sorted(ids)  # every completion read, none twice


async def test_turnaround_buckets_count_each_batch_once(store: StoreEngine) -> None:
    assert await store.turnaround_buckets([60.0, 600.0]) == ([0, 0], 0, 0.0)
    fast, _ = await submitted_batch(store, 2)
    await store.record_turnaround(fast, 30.0)
    slow, _ = await submitted_batch(store, 2, api_id="msgbatch_2")
    await store.record_turnaround(slow, 300.0)
    within, total, seconds = await store.turnaround_buckets([60.0, 600.0])
    assert (within, total, seconds) == ([1, 2], 2, 330.0)
