"""Batch limits and splitting, measured by the emulator; the real-time 32 MB limit at call time."""

from __future__ import annotations

import re
import time
from pathlib import Path

import anthropic
import pytest

from router import InvalidRequestError
from router.emulator import Emulator
from router.providers.anthropic.limits import check_realtime_size
from tests.durability import query
from tests.engine import creates, quiet_router
from tests.helpers import MODEL, ask, reply_text


async def test_flush_splits_by_max_requests_into_batches_in_flight_together(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    emulator.max_batch_requests = 40  # the emulator refuses anything bigger
    async with quiet_router(db_path, emulator, sdk, "[batch]\nmax_requests = 40\n") as router:
        for i in range(130):
            await router.messages.submit(**ask(f"q{i}"), latency="daily", key=f"k{i}")
        report = await router.flush()
        assert report.requests == 130 and len(report.batches) == 4
        assert [b.request_count for b in emulator.batches.values()] == [40, 40, 40, 10]
        # All four in flight at once, on both sides.
        assert {b.processing_status for b in emulator.batches.values()} == {"in_progress"}
        assert [b.state for b in await router.store.open_batches()] == ["in_progress"] * 4
        assert [e.status for e in creates(emulator)] == [200] * 4
        emulator.end_batches()
        assert (await router.poll()).delivered == 130
        for i in (0, 39, 40, 129):
            assert reply_text(await router.results.wait(f"k{i}")) == f"Reply to: q{i}"


async def test_flush_splits_by_bytes_actually_sent(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    limit = 20_000
    emulator.max_batch_bytes = limit  # a body one byte over would be a 413
    async with quiet_router(db_path, emulator, sdk, f"[batch]\nmax_bytes = {limit}\n") as router:
        sizes = [300 + (i * 37) % 900 for i in range(100)]  # uneven sizes
        for i, size in enumerate(sizes):
            await router.messages.submit(**ask(f"{i}:" + "x" * size), latency="daily", key=f"k{i}")
        report = await router.flush()
        assert report.requests == 100 and len(report.batches) >= 4
        posted = [e.body_size for e in creates(emulator)]
        assert all(e.status == 200 for e in creates(emulator))
        assert all(size <= limit for size in posted)
        # Tightly packed: every batch but the last is closer to the limit than one more request.
        assert all(size > limit - 1400 for size in posted[:-1])
        announced = [
            int(r[0]) for r in query(router.store.path, "SELECT body_bytes FROM batches ORDER BY id")
        ]
        assert announced == posted  # the exact Content-Length, measured on the wire
        assert sum(b.request_count for b in emulator.batches.values()) == 100
        emulator.end_batches()
        assert (await router.poll()).delivered == 100


async def test_odd_and_long_keys_never_reach_the_api_as_custom_ids(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    keys = ["ünïcode key/with spaces", "x" * 500, "a.b:c", "sku-42"]
    async with quiet_router(db_path, emulator, sdk) as router:
        for key in keys:
            await router.messages.submit(**ask(f"for {key[:10]}"), latency="daily", key=key)
        await router.flush()
        (batch,) = emulator.batches.values()
        assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", c) for c in batch.custom_ids)
        assert not set(batch.custom_ids) & set(keys)
        emulator.end_batches()
        await router.poll()
        for key in keys:
            assert f"for {key[:10]}" in reply_text(await router.results.wait(key))


async def test_realtime_request_over_32_mb_is_rejected_at_call_time(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(db_path, emulator, sdk) as router:
        with pytest.raises(InvalidRequestError, match=r"32,000,000 bytes"):
            await router.messages.create(**ask("x" * 32_000_001), latency="realtime")
        # Small strings that JSON escaping blows up past the limit are measured exactly.
        with pytest.raises(InvalidRequestError, match="real-time"):
            await router.messages.create(**ask("\x01" * 5_400_000), latency="realtime")
        assert emulator.journal == []  # nothing was sent
        msg = await router.messages.create(**ask("small"), latency="realtime")
        assert reply_text(msg) == "Reply to: small"


def test_realtime_size_check_is_exact_near_the_limit_and_cheap_below() -> None:
    base = {"model": MODEL, "max_tokens": 8}
    just_under = {**base, "messages": [{"role": "user", "content": "y" * (32_000_000 - 200)}]}
    check_realtime_size(just_under)  # measured exactly: fits
    with pytest.raises(InvalidRequestError):
        check_realtime_size({**base, "messages": [{"role": "user", "content": "y" * 32_000_000}]})
    # A generator of messages is kept usable for the SDK.
    gen = {**base, "messages": iter([{"role": "user", "content": "hi"}])}
    check_realtime_size(gen)
    assert gen["messages"] == [{"role": "user", "content": "hi"}]
    # A typical call is bounded without serializing: microseconds.
    typical = ask("what is the capital of France? " * 10, system="be brief", temperature=0.2)
    started = time.perf_counter()
    for _ in range(10_000):
        check_realtime_size(typical)
    assert (time.perf_counter() - started) / 10_000 < 50e-6
