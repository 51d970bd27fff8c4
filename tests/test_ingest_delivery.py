"""Ingest hands the rows it made final straight to this process's waiters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from router import Router
from router.emulator import Emulator
from router.poller import _line_blocks
from router.store import RequestRow
from router.store.result_lines import parse_result_line
from tests.helpers import ask, reply_text


async def test_poll_resolves_local_waiters_without_the_done_seq_pass(
    router: Router, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = router._waiters

    async def no_drain() -> None:
        return None

    # With the done_seq pass disabled, only the in-process delivery can resolve the waiters.
    monkeypatch.setattr(watcher, "_drain", no_drain)
    for i in range(3):
        await router.messages.submit(**ask(f"question {i}"), latency="daily", key=f"k{i}")
    await router.flush()
    emulator.end_batches()
    waits = [asyncio.create_task(router.results.wait(f"k{i}", timeout=10)) for i in range(3)]
    async with asyncio.timeout(10):
        while watcher.waiting < 3:  # noqa: ASYNC110 - a count, not an event
            await asyncio.sleep(0.005)
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

    def spy(finals: Sequence[tuple[object, ...]]) -> None:
        handed.extend(finals)
        original(finals)

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


def test_result_line_reduced_to_plain_values() -> None:
    line = (
        b'{"custom_id":"r7","result":{"type":"succeeded","message":{"model":"claude-x","usage":'
        b'{"input_tokens":11,"output_tokens":3,"cache_read_input_tokens":2,"cache_creation_input_tokens":5,'
        b'"cache_creation":{"ephemeral_5m_input_tokens":1,"ephemeral_1h_input_tokens":4}}}}}'
    )
    parsed = parse_result_line(line)
    assert parsed == (7, "succeeded", line, "claude-x", (11, 3, 1, 4, 2), None)
    errored = (
        b'{"custom_id":"r8","result":{"type":"errored","error":{"type":"error","error":{"type":"api_error"}}}}'
    )
    got = parse_result_line(errored)
    assert got is not None and got[1] == "errored" and got[4] == (0, 0, 0, 0, 0)
    assert got[5] == {"type": "errored", "error": {"type": "error", "error": {"type": "api_error"}}}
    assert parse_result_line(b'{"custom_id":"someone-else","result":{"type":"succeeded"}}') is None
    with pytest.raises(ValueError):
        parse_result_line(b'{"custom_id":"r9","result":')


async def test_line_blocks_split_lines_across_reads_and_drop_blanks() -> None:
    async def reads() -> AsyncIterator[bytes]:
        for block in (b'{"a":1}\n{"b"', b":2}\n\n", b"  \n", b'{"c":3}'):
            yield block

    got = [line async for lines in _line_blocks(reads()) for line in lines]
    assert got == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


async def test_line_blocks_never_yield_a_line_cut_by_a_broken_stream() -> None:
    async def reads() -> AsyncIterator[bytes]:
        yield b'{"a":1}\n{"b":'
        raise ConnectionResetError("cut")

    got: list[bytes] = []
    with pytest.raises(ConnectionResetError):
        async for lines in _line_blocks(reads()):
            got.extend(lines)
    assert got == [b'{"a":1}']
