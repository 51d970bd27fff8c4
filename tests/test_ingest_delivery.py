"""Ingest hands the rows it made final straight to this process's waiters."""

from __future__ import annotations

import asyncio

import pytest

from router import Router
from router.emulator import Emulator
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
