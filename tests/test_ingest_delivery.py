"""Ingest hands the rows it made final straight to this process's waiters."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anthropic
import pytest

from router import Router
from router.emulator import Emulator
from router.providers.lines import line_blocks
from router.retry import should_resubmit
from router.store import IngestStats, RequestRow
from tests.durability import query
from tests.engine import quiet_router
from tests.helpers import ask, reply_text


async def test_poll_resolves_local_waiters_without_the_done_seq_pass(
    router: Router, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = router._waiters
    # With the done_seq pass disabled, only the in-process delivery can resolve the waiters.
    waits = await _three_callers_waiting(router, emulator, monkeypatch)
    report = await router.poll()
    assert report.delivered == 3
    messages = await asyncio.gather(*waits)
    assert [reply_text(m) != "" for m in messages] == [True, True, True]
    assert watcher.waiting == 0
    # A caller that comes after the delivery finds the row final in the store.
    late = await router.results.wait("k1", timeout=10)
    assert late.id == messages[1].id


async def test_rows_handed_over_match_the_stored_rows_exactly(router: Router, emulator: Emulator) -> None:
    # Ingest builds each final row from one JSON read of the requests (floats through
    # printf('%!.17g')), so check every field, timestamps to the last bit, against a plain read.
    handed: list[tuple[object, ...]] = []
    original = router._waiters.deliver

    def spy(finals: Sequence[tuple[object, ...]], completions: range) -> None:
        handed.extend(finals)
        original(finals, completions)

    router._waiters.deliver = spy  # type: ignore[method-assign]
    for i in range(5):
        await router.messages.submit(**ask(f"question {i}"), latency="daily", key=f"key/{i} é")
    await router.flush()
    emulator.end_batches()
    assert (await router.poll()).delivered == 5
    stored = {row.id: row for row in await router.store.get_many([int(v[0]) for v in handed])}
    assert len(handed) == 5
    for values in handed:
        assert RequestRow._make(values) == stored[int(values[0])]


async def test_line_blocks_split_lines_across_reads_and_drop_blanks() -> None:
    async def reads() -> AsyncIterator[bytes]:
        for block in (b'{"a":1}\n{"b"', b":2}\n\n", b"  \n", b'{"c":3}'):
            yield block

    got = [line async for lines in line_blocks(reads()) for line in lines]
    assert got == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


async def test_line_blocks_never_yield_a_line_cut_by_a_broken_stream() -> None:
    async def reads() -> AsyncIterator[bytes]:
        yield b'{"a":1}\n{"b":'
        raise ConnectionResetError("cut")

    got: list[bytes] = []
    with pytest.raises(ConnectionResetError):
        async for lines in line_blocks(reads()):
            got.extend(lines)
    assert got == [b'{"a":1}']


def _line(custom_id: str, result: dict[str, object]) -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}, separators=(",", ":")).encode()


def _errored(error_type: str) -> dict[str, object]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": error_type, "message": "no"}}}


async def _submitted(router: Router, count: int) -> tuple[int, list[int]]:
    tickets = [
        await router.messages.submit(**ask(f"question {i}"), latency="daily", key=f"k{i}")
        for i in range(count)
    ]
    await router.flush()
    (batch,) = await router.store.open_batches()
    return batch.id, [t.request_id for t in tickets]


async def _ledger(router: Router, batch_id: int) -> list[tuple[object, ...]]:
    return query(
        router.store.path,
        "SELECT request_id, model, result_type, input_tokens, output_tokens, cache_write_5m, cache_write_1h,"
        " cache_read, duplicate FROM ledger WHERE batch_id = ? ORDER BY request_id",
        (batch_id,),
    )


async def test_sqlite_reads_each_line_down_to_its_verdict(router: Router) -> None:
    batch_id, ids = await _submitted(router, 4)
    model = (await router.store.get_many([ids[1]]))[0].model
    usage = {
        "input_tokens": 11,
        "output_tokens": 3,
        "cache_read_input_tokens": 2,
        "cache_creation_input_tokens": 5,
        "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 4},
    }
    succeeded = _line(f"r{ids[0]}", {"type": "succeeded", "message": {"model": "claude-x", "usage": usage}})
    lines = [
        succeeded,
        _line(f"r{ids[1]}", _errored("invalid_request_error")),  # never resubmitted: final
        succeeded,  # the same request again in one chunk: the first line wins
        _line("someone-else", {"type": "succeeded"}),  # not a custom_id of ours
        _line("r99999999", {"type": "succeeded"}),  # no such request here
        _line(f"r0{ids[3]}", {"type": "succeeded"}),  # not how we write ids
        _line(f"r{ids[2]}", _errored("overloaded_error")),  # resubmitted
    ]
    stats, finals = await router.store.apply_results(
        batch_id, lines, now=time.time(), max_attempts={"daily": 3}, retry=should_resubmit
    )
    assert stats == IngestStats(delivered=2, retried=1, duplicates=0, skipped=1, unknown=3)
    assert [(f[0], f[5], f[6], f[7], f[8]) for f in finals] == [
        (ids[0], "succeeded", 1, "succeeded", succeeded),
        (ids[1], "failed", 1, "errored", lines[1]),
    ]
    assert await _ledger(router, batch_id) == [
        (ids[0], "claude-x", "succeeded", 11, 3, 1, 4, 2, 0),
        (ids[1], model, "errored", 0, 0, 0, 0, 0, 0),
        (ids[2], model, "errored", 0, 0, 0, 0, 0, 0),
    ]
    rows = {row.id: row for row in await router.store.get_many(ids)}
    assert [(rows[i].state, rows[i].attempts) for i in ids] == [
        ("succeeded", 1),
        ("failed", 1),
        ("pending", 1),
        ("submitted", 0),
    ]
    # The same chunk read again (a stream re-read after a crash) changes nothing.
    again, finals = await router.store.apply_results(
        batch_id, lines, now=time.time(), max_attempts={"daily": 3}, retry=should_resubmit
    )
    assert (again.delivered, again.retried, again.skipped, again.unknown, finals) == (0, 0, 4, 3, [])
    assert len(await _ledger(router, batch_id)) == 3


async def test_the_store_asks_the_callers_retry_policy(router: Router) -> None:
    # The decision is the caller's: a policy that resubmits everything sends back even an error
    # the router's own policy fails at once, and it is asked once per line, with the request's
    # class limit, its attempts so far and its deadline.
    batch_id, ids = await _submitted(router, 2)
    asked: list[tuple[object, ...]] = []

    def always(
        result: Mapping[str, Any], *, attempts: int, max_attempts: int, deadline_at: float | None, now: float
    ) -> bool:
        asked.append((result["type"], attempts, max_attempts, deadline_at is not None, now))
        return True

    lines = [_line(f"r{i}", _errored("invalid_request_error")) for i in ids]
    stats, finals = await router.store.apply_results(
        batch_id, lines, now=123.0, max_attempts={"daily": 3}, retry=always
    )
    assert (stats.retried, stats.delivered, finals) == (2, 0, [])
    assert asked == [("errored", 1, 3, True, 123.0)] * 2
    assert await router.store.state_counts() == {"pending": 2}


async def test_a_line_that_is_not_json_is_named_and_nothing_is_written(router: Router) -> None:
    batch_id, ids = await _submitted(router, 2)
    lines = [_line(f"r{ids[0]}", {"type": "succeeded"}), _line(f"r{ids[1]}", {"type": "succeeded"})[:-3]]
    with pytest.raises(ValueError, match="line 2 of the chunk is not JSON"):
        await router.store.apply_results(
            batch_id, lines, now=time.time(), max_attempts={}, retry=should_resubmit
        )
    assert await router.store.state_counts() == {"submitted": 2}
    assert await _ledger(router, batch_id) == []


async def _three_final_rows_with_waiters(
    router: Router, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[asyncio.Task[Any]], list[tuple[object, ...]]]:
    """Three requests ingested while neither delivery nor the done_seq pass ran: their
    callers still wait, and their rows are final in the store."""
    watcher = router._waiters
    monkeypatch.setattr(watcher, "deliver", lambda finals, completions: None)
    waits = await _three_callers_waiting(router, emulator, monkeypatch)
    assert (await router.poll()).delivered == 3
    rows = [await router.store.get_by_key(f"k{i}") for i in range(3)]
    monkeypatch.undo()
    assert watcher.waiting == 3
    assert [row.state if row else None for row in rows] == ["succeeded"] * 3
    return waits, [tuple(row) for row in rows if row]


async def test_callers_handed_to_delivery_are_not_read_back_by_the_done_seq_pass(
    router: Router, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits, finals = await _three_final_rows_with_waiters(router, emulator, monkeypatch)
    watcher = router._waiters
    read_back: list[list[int]] = []
    get_many = router.store.get_many

    async def counting_get_many(ids: Sequence[int]) -> list[RequestRow]:
        read_back.append(list(ids))
        return await get_many(ids)

    monkeypatch.setattr(router.store, "get_many", counting_get_many)
    watcher.deliver(finals)
    # Claimed at once, before the delivery task wakes anyone: the pass that sees the same
    # completions now has nothing to read.
    assert not any(w.done() for w in waits)
    await watcher._drain()
    assert read_back == []
    await watcher.delivered()
    messages = await asyncio.gather(*waits)
    assert [f"question {i}" in reply_text(m) for i, m in enumerate(messages)] == [True] * 3


@pytest.mark.parametrize("handed_over", ["in-one-chunk", "out-of-order", "after-a-gap"])
async def test_completions_handed_over_with_their_numbers_are_not_read_back(
    router: Router, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, handed_over: str
) -> None:
    """The done_seq pass skips the completion numbers delivered with their rows, once it
    reaches them: chunks applied together may commit out of their order. A number before
    them that was not delivered (another process's, or a row of this one's not handed over)
    is read as ever."""
    waits, finals = await _three_final_rows_with_waiters(router, emulator, monkeypatch)
    watcher = router._waiters
    cursor = watcher._cursor
    last, ids = await router.store.completed_since(cursor)
    assert sorted(ids) == sorted(f[0] for f in finals)
    assert last == cursor + 3  # a fresh store: the three are the next completion numbers
    rows = sorted(finals, key=lambda f: ids.index(f[0]))  # in completion order
    read: list[list[int]] = []
    looked_up: list[list[int]] = []
    completed_since, get_many = router.store.completed_since, router.store.get_many

    async def counting_completed_since(after: int, limit: int = 5000) -> tuple[int, list[int]]:
        done = await completed_since(after, limit)
        read.append(done[1])
        return done

    async def counting_get_many(wanted: Sequence[int]) -> list[RequestRow]:
        looked_up.append(list(wanted))
        return await get_many(wanted)

    monkeypatch.setattr(router.store, "completed_since", counting_completed_since)
    monkeypatch.setattr(router.store, "get_many", counting_get_many)
    if handed_over == "in-one-chunk":
        watcher.deliver(rows, range(cursor + 1, cursor + 4))
    elif handed_over == "out-of-order":
        watcher.deliver(rows[2:], range(cursor + 3, cursor + 4))
        watcher.deliver(rows[:2], range(cursor + 1, cursor + 3))
    else:
        watcher.deliver(rows[1:], range(cursor + 2, cursor + 4))
    await watcher._drain()
    if handed_over == "after-a-gap":
        assert (read, looked_up) == ([ids, []], [[rows[0][0]]])
    else:
        assert (read, looked_up) == ([[]], [])
    assert watcher._cursor == last
    await watcher.delivered()
    messages = await asyncio.gather(*waits)
    assert [f"question {i}" in reply_text(m) for i, m in enumerate(messages)] == [True] * 3


async def test_closing_the_router_wakes_callers_already_handed_to_delivery(
    router: Router, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits, finals = await _three_final_rows_with_waiters(router, emulator, monkeypatch)
    router._waiters.deliver(finals)
    await router._waiters.stop()  # before the delivery task ran: their rows are final all the same
    messages = await asyncio.gather(*waits)
    assert [f"question {i}" in reply_text(m) for i, m in enumerate(messages)] == [True] * 3


async def test_the_done_seq_pass_waits_while_this_process_ingests(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = router._waiters
    passes: list[int] = []
    ran = asyncio.Event()

    async def counting_drain() -> None:
        passes.append(watcher._held)
        ran.set()

    monkeypatch.setattr(watcher, "_drain", counting_drain)
    with watcher.holding():
        for _ in range(3):
            watcher.wake()
            for _ in range(20):  # turns of the event loop, plenty for the watcher to run
                await asyncio.sleep(0)
        assert passes == []
    async with asyncio.timeout(5):
        await ran.wait()  # released: the pass runs at once, not at the next tick
    assert passes == [0]


async def _three_callers_waiting(
    router: Router, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> list[asyncio.Task[Any]]:
    """Three requests in an ended batch and a caller waiting on each, the done_seq pass off."""
    watcher = router._waiters

    async def no_drain() -> None:
        return None

    monkeypatch.setattr(watcher, "_drain", no_drain)
    for i in range(3):
        await router.messages.submit(**ask(f"question {i}"), latency="daily", key=f"k{i}")
    await router.flush()
    emulator.end_batches()
    waits = [asyncio.create_task(router.results.wait(f"k{i}", timeout=10)) for i in range(3)]
    async with asyncio.timeout(10):
        while watcher.waiting < 3:  # noqa: ASYNC110 - a count, not an event
            await asyncio.sleep(0.005)
    return waits


async def test_poll_holds_the_done_seq_pass_while_it_ingests_and_only_then(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with quiet_router(db_path, emulator, sdk) as router:  # no scheduled jobs beside the poll
        watcher = router._waiters
        held_at: dict[str, list[int]] = {"retrieve": [], "ingest": []}
        apply_results, retrieve = router.store.apply_results, sdk.messages.batches.retrieve

        async def spy_apply(*args: Any, **kwargs: Any) -> Any:
            held_at["ingest"].append(watcher._held)
            return await apply_results(*args, **kwargs)

        async def spy_retrieve(*args: Any, **kwargs: Any) -> Any:
            held_at["retrieve"].append(watcher._held)
            return await retrieve(*args, **kwargs)

        monkeypatch.setattr(router.store, "apply_results", spy_apply)
        monkeypatch.setattr(sdk.messages.batches, "retrieve", spy_retrieve)
        await router.messages.submit(**ask("question"), latency="daily", key="k")
        await router.flush()
        emulator.end_batches()
        assert (await router.poll()).delivered == 1
        # The status check runs unheld; the SDK's results() retrieves the batch again for its
        # results_url, inside the ingest.
        assert held_at == {"retrieve": [0, 1], "ingest": [1]}
        assert watcher._held == 0
