"""Every per-request batch outcome, through the real SDK and the emulator (issue 5, item 3)."""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from router import BatchResultMissingError, RequestCanceledError, RequestExpiredError, retry
from router.emulator import Emulator
from router.providers.anthropic.errors import STATUS_BY_ERROR_TYPE
from tests.engine import calls, creates, ledger_rows, quiet_router
from tests.helpers import ask, reply_text, run_batches, stored

BOTH_ENGINES = True  # every test runs on SQLite and on PostgreSQL (tests/stores.py)
DAY = 86_400.0

NON_RETRYABLE = [
    ("invalid_request_error", anthropic.BadRequestError),
    ("authentication_error", anthropic.AuthenticationError),
    ("permission_error", anthropic.PermissionDeniedError),
    ("not_found_error", anthropic.NotFoundError),
    ("billing_error", anthropic.APIStatusError),
]
RETRYABLE = [
    ("api_error", anthropic.InternalServerError),
    ("overloaded_error", anthropic.OverloadedError),
    ("rate_limit_error", anthropic.RateLimitError),
    ("timeout_error", anthropic.InternalServerError),
]


async def test_succeeded_is_delivered_with_its_usage(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        call = asyncio.create_task(router.messages.create(**ask("count my tokens"), latency="daily"))
        await stored(router, 1)
        await run_batches(router, emulator)
        msg = await asyncio.wait_for(call, 5)
        assert "count my tokens" in reply_text(msg)
        totals = await router.store.ledger_totals()
        assert [(t["lane"], t["requests"], t["input_tokens"], t["output_tokens"]) for t in totals] == [
            ("batch", 1, msg.usage.input_tokens, msg.usage.output_tokens)
        ]


@pytest.mark.parametrize(("error_type", "exc_class"), NON_RETRYABLE)
async def test_non_retryable_error_fails_at_once(
    store_location: str,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    error_type: str,
    exc_class: type[anthropic.APIStatusError],
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask(f"no [emulator:error={error_type}]"), latency="daily", key="k")
        await run_batches(router, emulator)
        row = await router.results.status("k")
        assert (row.state, row.attempts) == ("failed", 1)
        with pytest.raises(exc_class) as caught:
            await router.results.wait("k")
        assert caught.value.type == error_type
        assert caught.value.status_code == STATUS_BY_ERROR_TYPE[error_type]
        # Never resubmitted, however many flushes follow.
        await run_batches(router, emulator)
        assert len(creates(emulator)) == 1
        assert await router.store.state_counts() == {"failed": 1}


@pytest.mark.parametrize(("error_type", "exc_class"), RETRYABLE)
async def test_retryable_error_is_resubmitted_then_fails_with_the_last_error(
    store_location: str,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    error_type: str,
    exc_class: type[anthropic.APIStatusError],
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("flaky"), latency="daily", key="k")
        # Earlier attempts fail with another retryable error; the caller sees the last one.
        other = "overloaded_error" if error_type != "overloaded_error" else "api_error"
        for attempt, kind in enumerate([other, other, error_type], start=1):
            emulator.outcomes.errored = {kind: 1.0}
            await run_batches(router, emulator)
            row = await router.results.status("k")
            assert row.attempts == attempt
            assert row.state == ("pending" if attempt < 3 else "failed")
        with pytest.raises(exc_class) as caught:
            await router.results.wait("k")
        assert caught.value.type == error_type
        assert len(creates(emulator)) == 3  # the class's max_attempts
        assert [t for _, t, _ in await ledger_rows(router)] == ["errored"] * 3


async def test_retryable_error_stops_at_the_class_limit(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("[emulator:error=api_error]"), latency="twice", key="k")
        for _ in range(4):
            await run_batches(router, emulator)
        assert (await router.results.status("k")).attempts == 2
        assert len(creates(emulator)) == 2
        with pytest.raises(anthropic.InternalServerError):
            await router.results.wait("k")


async def test_retryable_error_then_success_delivers_the_message(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("second time lucky"), latency="daily", key="k")
        emulator.outcomes.errored = {"rate_limit_error": 1.0}
        await run_batches(router, emulator)
        emulator.outcomes.errored = {}
        await run_batches(router, emulator)
        msg = await router.results.wait("k")
        assert "second time lucky" in reply_text(msg)
        assert (await router.results.status("k")).attempts == 2


async def test_expired_is_resubmitted_while_the_deadline_allows_then_fails(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        ticket = await router.messages.submit(**ask("slow [emulator:expire]"), latency="daily", key="k")
        assert ticket.deadline_at == pytest.approx(emulator.clock.now() + DAY)
        await run_batches(router, emulator)  # well before the deadline: sent again
        assert (await router.results.status("k")).state == "pending"
        emulator.clock.advance(DAY + 60)  # past the deadline: the next expiry is final
        await run_batches(router, emulator)
        row = await router.results.status("k")
        assert (row.state, row.attempts) == ("failed", 2)  # below max_attempts: the deadline decided
        with pytest.raises(RequestExpiredError, match="expired"):
            await router.results.wait("k")
        assert len(creates(emulator)) == 2


async def test_expired_then_processed_in_the_next_batch(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("try again"), latency="daily", key="k")
        emulator.outcomes.expired = 1.0
        await run_batches(router, emulator)
        emulator.outcomes.expired = 0.0
        await run_batches(router, emulator)
        assert "try again" in reply_text(await router.results.wait("k"))


def test_retry_decision_hook() -> None:
    expired = {"type": "expired"}
    assert retry.decide(expired, attempts=1, max_attempts=3, deadline_at=None, now=0) == "resubmit"
    assert retry.decide(expired, attempts=1, max_attempts=3, deadline_at=10, now=5) == "resubmit"
    assert retry.decide(expired, attempts=1, max_attempts=3, deadline_at=10, now=10) == "fail"
    assert retry.decide(expired, attempts=3, max_attempts=3, deadline_at=None, now=0) == "fail"
    assert retry.decide({"type": "canceled"}, attempts=1, max_attempts=2, deadline_at=0, now=9) == "resubmit"
    for kind, _ in RETRYABLE:
        body = {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": "m"}}}
        assert retry.decide(body, attempts=2, max_attempts=3, deadline_at=None, now=0) == "resubmit"
    for kind, _ in NON_RETRYABLE:
        body = {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": "m"}}}
        assert retry.decide(body, attempts=1, max_attempts=3, deadline_at=None, now=0) == "fail"


async def test_canceled_by_someone_else_is_resubmitted(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("cancel me"), latency="daily", key="k")
        report = await router.flush()
        await sdk.messages.batches.cancel(report.batches[0])
        emulator.clock.advance(1)
        await router.poll()
        row = await router.results.status("k")
        assert (row.state, row.attempts) == ("pending", 1)
        await run_batches(router, emulator)
        assert "cancel me" in reply_text(await router.results.wait("k"))


async def test_canceled_until_the_limit_raises_canceled(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("always canceled"), latency="twice", key="k")
        for _ in range(2):
            report = await router.flush()
            await sdk.messages.batches.cancel(report.batches[0])
            emulator.clock.advance(1)
            await router.poll()
        with pytest.raises(RequestCanceledError):
            await router.results.wait("k")
        assert len(creates(emulator)) == 2


async def test_partial_batch_expired_part_is_resubmitted(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        for i in range(10):
            await router.messages.submit(**ask(f"part {i}"), latency="weekly", key=f"k{i}")
        emulator.outcomes.partial_rate = 1.0
        emulator.outcomes.partial_done = 0.4
        await router.flush()
        emulator.clock.advance(DAY)  # the batch runs into the 24 h limit with 4 of 10 done
        first = await router.poll()
        assert (first.delivered, first.retried) == (4, 6)
        emulator.outcomes.partial_rate = 0.0
        await run_batches(router, emulator)
        for i in range(10):
            assert f"part {i}" in reply_text(await router.results.wait(f"k{i}"))
        assert [b.request_count for b in emulator.batches.values()] == [10, 6]


async def test_late_batch_is_polled_until_it_ends(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    emulator.outcomes.late_rate = 1.0
    emulator.outcomes.late_seconds = 3 * 3600
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("late"), latency="daily", key="k")
        await router.flush()
        emulator.clock.advance(emulator.batch_seconds)
        assert (await router.poll()).ended == []
        emulator.clock.advance(3 * 3600)
        assert len((await router.poll()).ended) == 1
        assert "late" in reply_text(await router.results.wait("k"))
        assert calls(emulator, "batches.retrieve") >= 2


async def test_results_past_29_days_fail_with_an_error_that_says_so(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("forgotten"), latency="daily", key="k")
        await router.messages.submit(**ask("forgotten too"), latency="daily", key="k2")
        await router.flush()
        waiter = asyncio.create_task(router.results.wait("k"))
        emulator.clock.advance(30 * DAY)  # the daemon was down for a month
        report = await router.poll()
        assert report.delivered == 2
        with pytest.raises(BatchResultMissingError, match="29 days"):
            await asyncio.wait_for(waiter, 5)
        row = await router.results.status("k2")
        assert (row.state, row.outcome) == ("failed", "missing")
        assert await router.store.open_batches() == []
        assert len(creates(emulator)) == 1  # failed, not resubmitted


async def test_results_not_found_before_29_days_are_retried_not_failed(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(store_location, emulator, sdk) as router:
        await router.messages.submit(**ask("patience"), latency="daily", key="k")
        await router.flush()
        emulator.end_batches()
        emulator.faults.fail_next("batches.results", status=404)
        assert (await router.poll()).errors == 1
        assert (await router.results.status("k")).state == "submitted"
        await router.poll()
        assert "patience" in reply_text(await router.results.wait("k"))


def _message(*content: object, **extra: object) -> dict[str, object]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": list(content),
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 5, "service_tier": "batch"},
        **extra,
    }


MESSAGES = {
    "text": _message({"type": "text", "text": "hi", "citations": None}),
    "no blocks": _message(),
    "thinking, tool use and text": _message(
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"q": 1}},
        {"type": "text", "text": "done"},
    ),
    "server tool and its result": _message(
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": [
                {"type": "web_search_result", "url": "https://e.x", "title": "t", "encrypted_content": "e"}
            ],
        },
    ),
    "extra fields kept": _message({"type": "text", "text": "hi", "future_field": [1]}, future_top=True),
    "a block type this SDK does not know": _message({"type": "hologram", "frames": 3}),
    "a block without a type": _message({"text": "hi"}),
    "a text block with a bad field": _message({"type": "text", "text": 5}),
    "content that is not a list": _message() | {"content": "hi"},
    "not a message at all": {"content": [{"type": "text", "text": "hi"}]},
}


@pytest.mark.parametrize("data", MESSAGES.values(), ids=MESSAGES.keys())
def test_message_from_builds_what_model_validate_builds(data: dict[str, object]) -> None:
    """The fast path gives the same Message, block classes and set fields, or the same error."""
    from anthropic.types import Message
    from pydantic import ValidationError

    from router.providers.anthropic.outcome import message_from

    try:
        expected = Message.model_validate(data)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as got_error:
            message_from(data)
        assert got_error.value.errors() == exc.errors()
        return
    got = message_from(data)
    assert got.to_json() == expected.to_json()
    assert got.model_fields_set == expected.model_fields_set
    assert [type(b) for b in got.content] == [type(b) for b in expected.content]
    assert [b.model_fields_set for b in got.content] == [b.model_fields_set for b in expected.content]
    assert got.model_extra == expected.model_extra


def test_message_from_takes_the_fast_path_with_this_sdk() -> None:
    """If the SDK changes how it spells ContentBlock, the fast path turns off: say so here."""
    from router.providers.anthropic.outcome import _content_blocks

    blocks = _content_blocks()
    assert blocks is not None
    [block] = blocks.validate_python([{"type": "tool_use", "id": "t", "name": "n", "input": {}}])
    assert type(block).__name__ == "ToolUseBlock"
