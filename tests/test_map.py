"""`client.messages.map`: bulk deferral with bounded memory, results yielded as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from router import InvalidRequestError, Router
from router.emulator import Emulator
from router.errors import DeadlineError
from tests.engine import creates, quiet_router
from tests.helpers import ask, reply_text


@contextlib.asynccontextmanager
async def pumping(router: Router, emulator: Emulator) -> AsyncIterator[None]:
    """Flush, end and poll batches in the background while a map runs (what the scheduler would do)."""

    async def pump() -> None:
        while True:
            await router.flush()
            emulator.end_batches()
            await router.poll()
            await asyncio.sleep(0.005)

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Counting:
    """An input iterator that records how far it has been read."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.consumed = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.total):
            self.consumed += 1
            yield ask(f"item {i}", key=f"item-{i}")


async def test_map_thousands_with_bounded_consumption(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    total, window = 3000, 400
    source = Counting(total)
    seen: dict[str, Message] = {}
    ahead = 0
    async with quiet_router(db_path, emulator, sdk) as router, pumping(router, emulator):
        async for key, outcome in router.messages.map(source, latency="daily", window=window):
            assert isinstance(outcome, Message), outcome
            assert key not in seen
            seen[key] = outcome
            ahead = max(ahead, source.consumed - len(seen))
            assert router._waiters.waiting == 0  # no future per request
            assert len(router._waiters._listeners) <= window
    assert ahead <= window  # never more than `window` read but not yet answered
    assert source.consumed == total and len(seen) == total
    for i in (0, 1234, total - 1):
        assert reply_text(seen[f"item-{i}"]) == f"Reply to: item {i}"
    assert len(creates(emulator)) >= total // window  # the input was consumed batch by batch


async def test_map_reads_lazily_and_stops_when_the_consumer_stops(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    source = Counting(1_000_000)  # far too many to store: only a window is ever read
    async with quiet_router(db_path, emulator, sdk) as router, pumping(router, emulator):
        results = router.messages.map(source, latency="daily", window=50)
        got = [await anext(results) for _ in range(10)]
        await results.aclose()
        assert len(got) == 10
        assert source.consumed <= 60
        assert sum((await router.store.state_counts()).values()) == source.consumed
        assert router._waiters._listeners == {}


async def test_map_async_iterable_keys_bad_items_and_errors_as_outcomes(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async def items() -> AsyncIterator[dict[str, Any]]:
        yield ask("fine", key="good")
        yield ask("bad", key="broken") | {"max_tokens": 0}
        yield ask("refused [emulator:error=invalid_request_error]", key="refused")
        yield ask("no key given")
        yield ask("tagged", key="tagged", tag="special")

    async with quiet_router(db_path, emulator, sdk) as router, pumping(router, emulator):
        outcomes = {key: outcome async for key, outcome in router.messages.map(items(), latency="weekly")}
        assert len(outcomes) == 5
        assert isinstance(outcomes["good"], Message)
        assert isinstance(outcomes["broken"], InvalidRequestError)
        assert "item 1" in str(outcomes["broken"]) and "max_tokens" in str(outcomes["broken"])
        assert isinstance(outcomes["refused"], anthropic.BadRequestError)  # yielded, not raised
        (auto,) = [k for k in outcomes if k.startswith("map-")]
        assert reply_text(outcomes[auto]) == "Reply to: no key given"
        assert (await router.results.status("tagged")).tag == "special"
        assert (await router.results.status("good")).latency == "weekly"
        with pytest.raises(KeyError):
            await router.results.status("broken")  # nothing stored for a bad item


async def test_map_of_already_answered_keys_needs_no_batch(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(db_path, emulator, sdk) as router:
        async with pumping(router, emulator):
            first = [
                k
                async for k, _ in router.messages.map(
                    [ask(f"q{i}", key=f"k{i}") for i in range(5)], latency="daily"
                )
            ]
        batches = len(creates(emulator))
        # No pump now: every outcome must come from the store.
        again = {
            k: o
            async for k, o in router.messages.map(
                [ask(f"q{i}", key=f"k{i}") for i in range(5)], latency="daily"
            )
        }
        assert sorted(again) == sorted(first)
        assert all(isinstance(o, Message) for o in again.values())
        assert len(creates(emulator)) == batches


async def test_map_refuses_real_time_and_bad_windows(router: Router) -> None:
    with pytest.raises(InvalidRequestError, match="real time"):
        router.messages.map([ask("x")], latency="realtime")
    with pytest.raises(InvalidRequestError, match="window"):
        router.messages.map([ask("x")], latency="daily", window=0)
    assert await router.store.state_counts() == {}


async def test_map_with_the_inline_scheduler_needs_no_driver(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    cfg_file = db_path.parent / "router.toml"
    cfg_file.write_text(
        f'[store]\npath = "{db_path}"\n[batch]\npoll_interval = "50ms"\n'
        '[classes.soon]\nroute = "batch"\ndeadline = "1d"\nevery = "100ms"\n'
    )
    emulator.batch_seconds = 0.0  # batches end as soon as they are looked at
    source = Counting(600)
    async with Router.from_config(cfg_file, anthropic=sdk) as router:  # real clock: jobs fall due
        got = {k: o async for k, o in router.messages.map(source, latency="soon", window=250)}
    assert len(got) == 600 and all(isinstance(o, Message) for o in got.values())
    assert len(creates(emulator)) >= 3  # the window let no more than 250 through at a time


async def test_two_maps_over_the_same_keys_both_get_every_result(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    items = [ask(f"shared {i}", key=f"s{i}") for i in range(30)]

    async def collect(router: Router) -> dict[str, Any]:
        return {k: o async for k, o in router.messages.map(items, latency="daily", window=10)}

    async with quiet_router(db_path, emulator, sdk) as router, pumping(router, emulator):
        first, second = await asyncio.wait_for(asyncio.gather(collect(router), collect(router)), 30)
        assert router._waiters._listeners == {}
    assert sorted(first) == sorted(second) == sorted(f"s{i}" for i in range(30))
    assert all(isinstance(o, Message) for o in [*first.values(), *second.values()])


async def test_map_items_no_batch_can_answer_in_time_go_real_time_or_fail(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    extra = (
        '[classes.urgent]\nroute = "batch"\ndeadline = "30m"\n'  # shorter than the 1 h turnaround prior
        '[classes.strict]\nroute = "batch"\ndeadline = "30m"\non_deadline_risk = "fail"\n'
    )
    async with quiet_router(db_path, emulator, sdk, extra) as router:
        urgent = {k: o async for k, o in router.messages.map([ask("hurry", key="u")], latency="urgent")}
        strict = {k: o async for k, o in router.messages.map([ask("hurry", key="s")], latency="strict")}
        assert reply_text(urgent["u"]) == "Reply to: hurry"  # answered in real time, no batch
        assert isinstance(strict["s"], DeadlineError)
        assert creates(emulator) == []
        assert (await router.results.status("u")).state == "succeeded"
        with pytest.raises(KeyError):
            await router.results.status("s")
