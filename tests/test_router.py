"""End to end: the Router through the real SDK over loopback to the emulator, on a real SQLite file
or a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import anthropic
import pytest
from anthropic.types import Message

from router import InvalidRequestError, RequestCanceledError, RequestExpiredError, Router, RouterConfig
from router.emulator import Emulator
from tests.helpers import MODEL, ask, reply_text, run_batches, stored
from tests.stores import store_toml

# Every test runs on SQLite and on PostgreSQL (tests/stores.py), but those marked sqlite_only.
BOTH_ENGINES = True


def batch_creates(emulator: Emulator) -> int:
    return sum(1 for e in emulator.journal if e.method == "POST" and e.path == "/v1/messages/batches")


async def test_realtime_lane_returns_the_sdk_message(router: Router, emulator: Emulator) -> None:
    msg = await router.messages.create(**ask("what is 2+2?"), latency="realtime")
    assert isinstance(msg, Message)
    assert "what is 2+2?" in reply_text(msg)
    assert [e.path for e in emulator.journal if e.method == "POST"] == ["/v1/messages"]
    assert await router.store.state_counts() == {}  # real time stores no request


async def test_deferred_call_goes_through_a_real_batch(router: Router, emulator: Emulator) -> None:
    call = asyncio.create_task(router.messages.create(**ask("label this invoice"), latency="daily", tag="t"))
    await stored(router, 1)
    assert not call.done()
    report = await router.flush()
    assert report.requests == 1 and len(report.batches) == 1
    assert not call.done()  # the batch has not ended on the emulator clock
    await router.poll()
    assert not call.done()
    emulator.clock.advance(emulator.batch_seconds)
    await router.poll()
    msg = await asyncio.wait_for(call, 5)
    assert isinstance(msg, Message)
    assert "label this invoice" in reply_text(msg)
    assert (await router.store.state_counts()) == {"succeeded": 1}
    assert batch_creates(emulator) == 1


async def test_several_hundred_concurrent_callers_each_get_their_own_reply(
    router: Router, emulator: Emulator
) -> None:
    classes = ["realtime", "hourly", "daily", "weekly"]
    calls = [
        ask(f"request number {i} of the load test", latency=classes[i % 4], tag=f"tag-{i % 3}")
        for i in range(400)
    ]
    tasks = [asyncio.create_task(router.messages.create(**c)) for c in calls]
    await stored(router, 300)
    await run_batches(router, emulator)
    replies = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for i, msg in enumerate(replies):
        assert f"request number {i} of the load test" in reply_text(msg), i
    counts = await router.store.state_counts()
    assert counts == {"succeeded": 300}
    assert batch_creates(emulator) >= 1


@pytest.mark.parametrize(
    ("error_type", "exc_class"),
    [
        ("invalid_request_error", anthropic.BadRequestError),
        ("authentication_error", anthropic.AuthenticationError),
        ("permission_error", anthropic.PermissionDeniedError),
        ("not_found_error", anthropic.NotFoundError),
    ],
)
async def test_errored_result_raises_the_realtime_exception_class(
    router: Router, emulator: Emulator, error_type: str, exc_class: type[anthropic.APIStatusError]
) -> None:
    prompt = f"please fail [emulator:error={error_type}]"
    # What the real-time endpoint raises for this error...
    with pytest.raises(exc_class) as realtime:
        await router.messages.create(**ask(prompt), latency="realtime")
    # ... is what the deferred call raises, type and message preserved.
    call = asyncio.create_task(router.messages.create(**ask(prompt), latency="daily"))
    await stored(router, 1)
    await run_batches(router, emulator)
    with pytest.raises(exc_class) as deferred:
        await asyncio.wait_for(call, 5)
    assert type(deferred.value) is type(realtime.value)
    assert deferred.value.type == error_type
    assert deferred.value.status_code == realtime.value.status_code
    assert deferred.value.api_message
    assert batch_creates(emulator) == 1  # not resubmitted


async def test_retryable_errors_are_resubmitted_then_raise(router: Router, emulator: Emulator) -> None:
    call = asyncio.create_task(
        router.messages.create(**ask("[emulator:error=overloaded_error]"), latency="daily")
    )
    await stored(router, 1)
    attempts = router.config.classes["daily"].max_attempts
    for _ in range(attempts):
        await run_batches(router, emulator)
    with pytest.raises(anthropic.OverloadedError):
        await asyncio.wait_for(call, 5)
    assert batch_creates(emulator) == attempts
    row = await router.results.status((await router.store.get_many([1]))[0].key)
    assert row.attempts == attempts and row.state == "failed"


async def test_expired_requests_raise_after_retries(router: Router, emulator: Emulator) -> None:
    ticket = await router.messages.submit(**ask("too slow [emulator:expire]"), latency="daily", key="slow")
    for _ in range(router.config.classes["daily"].max_attempts):
        await run_batches(router, emulator)
    with pytest.raises(RequestExpiredError, match="expired"):
        await router.results.wait(ticket.key)


async def test_canceled_batch_is_resubmitted_and_then_succeeds(
    router: Router, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    ticket = await router.messages.submit(**ask("cancel me once"), latency="daily", key="c1")
    report = await router.flush()
    await sdk.messages.batches.cancel(report.batches[0])
    emulator.clock.advance(1)  # the cancel completes once the clock moves on
    await router.poll()  # ended as canceled: back to pending
    assert (await router.results.status("c1")).state == "pending"
    await run_batches(router, emulator)
    msg = await router.results.wait(ticket.key)
    assert "cancel me once" in reply_text(msg)
    assert batch_creates(emulator) == 2


async def test_canceled_until_the_limit_raises_canceled(
    router: Router, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    await router.messages.submit(**ask("always canceled"), latency="daily", key="c2")
    for _ in range(router.config.classes["daily"].max_attempts):
        report = await router.flush()
        await sdk.messages.batches.cancel(report.batches[0])
        emulator.clock.advance(1)
        await router.poll()
    with pytest.raises(RequestCanceledError):
        await router.results.wait("c2")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (ask("x") | {"max_tokens": 0}, "max_tokens"),
        (ask("x") | {"max_tokens": "10"}, "max_tokens"),
        (ask("x") | {"model": ""}, "model"),
        (ask("x") | {"messages": []}, "messages"),
        (ask("x") | {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        (ask("x") | {"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
        (ask("x") | {"stream": True}, "stream"),
        (ask("x") | {"timeout": 5}, "timeout"),
        (ask("x") | {"latency": "someday"}, "someday"),
        (ask("x") | {"key": ""}, "key"),
        (ask("x") | {"tag": 5}, "tag"),
    ],
)
async def test_bad_params_are_rejected_before_anything_is_stored(
    router: Router, emulator: Emulator, kwargs: dict[str, object], field: str
) -> None:
    kwargs = {"latency": "daily", **kwargs}
    with pytest.raises(InvalidRequestError, match=field):
        await router.messages.create(**kwargs)
    with pytest.raises(InvalidRequestError, match=field):
        await router.messages.submit(**kwargs)
    assert await router.store.state_counts() == {}
    assert emulator.journal == []


async def test_request_too_large_for_a_batch_is_rejected_at_call_time(
    config: RouterConfig, sdk: anthropic.AsyncAnthropic
) -> None:
    config = config.model_copy(update={"batch": config.batch.model_copy(update={"max_bytes": 10_000})})
    async with Router(config, anthropic=sdk, scheduler=False) as router:
        with pytest.raises(InvalidRequestError, match="max_bytes"):
            await router.messages.submit(**ask("x" * 20_000), latency="daily")
        assert await router.store.state_counts() == {}


async def test_results_by_key_survive_a_restart(
    config: RouterConfig, sdk: anthropic.AsyncAnthropic, emulator: Emulator
) -> None:
    async with Router(config, anthropic=sdk, clock=emulator.clock.now) as first:
        ticket = await first.messages.submit(**ask("remember me"), latency="weekly", key="sku-42")
        assert ticket.created and ticket.key == "sku-42"
        await first.flush()
    # A new Router on the same file (as after a restart) picks up the in-flight batch.
    emulator.end_batches()
    async with Router(config, anthropic=sdk, clock=emulator.clock.now) as second:
        waiter = asyncio.create_task(second.results.wait("sku-42"))
        await second.poll()
        msg = await asyncio.wait_for(waiter, 5)
        assert "remember me" in reply_text(msg)
    async with Router(config, anthropic=sdk) as third:
        again = await third.results.get("sku-42")
        assert again is not None and again.id == msg.id


async def test_a_second_router_on_the_same_store_sees_results_written_by_the_first(
    config: RouterConfig, sdk: anthropic.AsyncAnthropic, emulator: Emulator
) -> None:
    async with (
        Router(config, anthropic=sdk, scheduler=False) as writer,
        Router(config, anthropic=sdk, scheduler=False) as reader,
    ):
        await writer.messages.submit(**ask("shared"), latency="daily", key="shared-1")
        waiting = asyncio.create_task(reader.results.wait("shared-1"))
        await run_batches(writer, emulator)
        msg = await asyncio.wait_for(waiting, 5)  # found by the reader's watcher, not by a direct call
        assert "shared" in reply_text(msg)


async def test_key_is_an_idempotency_key(router: Router, emulator: Emulator) -> None:
    first = await router.messages.submit(**ask("once"), latency="daily", key="k-1")
    second = await router.messages.submit(**ask("once"), latency="daily", key="k-1")
    assert first.created and not second.created
    assert first.request_id == second.request_id
    with pytest.raises(InvalidRequestError, match="different parameters"):
        await router.messages.submit(**ask("other"), latency="daily", key="k-1")
    await run_batches(router, emulator)
    assert (await router.results.status("k-1")).state == "succeeded"
    assert sum(1 for _ in emulator.batches) == 1


async def test_unknown_key_is_a_clear_error(router: Router) -> None:
    with pytest.raises(KeyError, match="nope"):
        await router.results.wait("nope")


async def test_streaming_passes_through_in_real_time_and_is_refused_for_batches(router: Router) -> None:
    stream = await router.messages.create(**ask("stream this"), latency="realtime", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    async with router.messages.stream(**ask("stream that"), latency="realtime") as s:
        final = await s.get_final_message()
    assert "stream that" in reply_text(final)
    with pytest.raises(InvalidRequestError, match="stream"):
        router.messages.stream(**ask("no"), latency="daily")
    tokens = await router.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "count"}])
    assert tokens.input_tokens > 0


@pytest.mark.sqlite_only
async def test_store_is_private_and_never_holds_the_api_key(db_path: Path, emulator: Emulator) -> None:
    secret = "sk-ant-test-SECRET-do-not-store"
    client = anthropic.AsyncAnthropic(base_url=emulator.url, api_key=secret, max_retries=0)
    config = RouterConfig.default(store_path=db_path).with_base_url(emulator.url)
    async with Router(config, anthropic=client, scheduler=False) as router:
        await router.messages.submit(**ask("keep my secret"), latency="daily")
        await router.messages.create(**ask("realtime"), latency="realtime")
        await run_batches(router, emulator)
    await client.close()
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    for path in db_path.parent.iterdir():
        assert secret.encode() not in path.read_bytes(), path


async def test_scheduler_flushes_and_polls_on_its_own(
    db_path: Path, store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    text = f"""
[store]
{store_toml(store_location)}
[batch]
poll_interval = "50ms"
[classes.soon]
route = "batch"
deadline = "24h"
every = "100ms"
"""
    cfg_file = db_path.parent / "router.toml"
    cfg_file.write_text(text)
    emulator.batch_seconds = 0.0  # batches end as soon as they are looked at
    async with Router.from_config(cfg_file, anthropic=sdk) as router:  # real clock: polls fall due
        assert router.scheduler is not None
        msg = await asyncio.wait_for(router.messages.create(**ask("no one flushes me"), latency="soon"), 10)
    assert "no one flushes me" in reply_text(msg)
    assert batch_creates(emulator) == 1
